"""Running a loaded model on batches of normalised tiles."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from engine.models.modelfile import ModelSpec


class Predictor:
    """Probabilities [B, C] and attention [B, C, h, w] (or None) for batches of tiles."""

    def __init__(self, model: nn.Module, spec: ModelSpec, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device
        self.thresholds = np.asarray(spec.label_thresholds(), np.float32)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch``: [B, bands, px, px], or for multi-resolution models a dict group name
        -> [B, n_bands, px_g, px_g]."""
        if isinstance(batch, dict):
            x = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch.items()}
        else:
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with amp:
            out = self.model(x)
        probs = torch.sigmoid(out.logits.float()).cpu().numpy()
        att = None if out.attention is None else out.attention.float().cpu().numpy()
        return probs, att

    def labels_of(self, probs: np.ndarray) -> list[list[str]]:
        """Predicted label names per row: probability at or above the label's threshold."""
        return [[l for l, p, t in zip(self.spec.labels, row, self.thresholds) if p >= t]
                for row in probs]
