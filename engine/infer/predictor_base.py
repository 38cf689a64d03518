"""What every predictor gives annotate, whichever runtime runs the model (no torch)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from engine.models.spec import ModelSpec


class TilePredictor(ABC):
    """Probabilities [B, C] and attention [B, C, h, w] (or None) for batches of tiles.

    ``batch``: normalised tiles [B, bands, px, px], or for multi-resolution models a dict
    group name -> [B, n_bands, px_g, px_g]. Subclasses run the model (PyTorch or ONNX
    Runtime); ``runtime`` and ``device_type`` say which and where, for the job's log.
    """

    runtime = "?"
    device_type = "cpu"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.thresholds = np.asarray(spec.label_thresholds(), np.float32)

    @abstractmethod
    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities [B, C], attention [B, C, h, w] or None) of one batch."""

    def labels_of(self, probs: np.ndarray) -> list[list[str]]:
        """Predicted label names per row: probability at or above the label's threshold."""
        return [[l for l, p, t in zip(self.spec.labels, row, self.thresholds) if p >= t]
                for row in probs]
