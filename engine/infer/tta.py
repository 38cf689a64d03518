"""Test-time augmentation: a tile's prediction averaged over its flips and rotations.

Aerial tiles have no "up": a field seen rotated or mirrored is the same field, and the
models are trained with all eight flips and 90-degree rotations (the dihedral group of the
square). Predicting each tile in several of those views and averaging is a standard way to
trade time for accuracy:

- ``none``: the tile as it is (one forward pass).
- ``flips``: the tile, its left-right and top-bottom mirrors and its half turn (4 passes).
- ``dihedral``: all eight flips and quarter turns (8 passes).

Probabilities are the mean over the views. Each view's attention maps are turned back into
the tile's own frame before they are averaged, so a map still lies over its tile; the
average keeps the attention contract (engine/models/output.py): in [0, 1], on one scale.
Measured on the UC Merced test split (docs/benchmarks.md) the default model gains a few
thousandths of mAP and OF1 at 8 x the time per tile.
"""
from __future__ import annotations

import numpy as np

from engine.errors import TileLabelError
from engine.infer.predictor_base import TilePredictor

View = tuple[int, bool]  # (quarter turns counter-clockwise, then mirror left-right)

TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "dihedral": tuple((k, m) for k in range(4) for m in (False, True)),
}


def check_tta(mode: str) -> str:
    if mode not in TTA_VIEWS:
        raise TileLabelError(f"unknown test-time augmentation '{mode}'; use "
                             f"{', '.join(TTA_VIEWS)}")
    return mode


def to_view(x: np.ndarray, view: View) -> np.ndarray:
    """The image (or map) stack [..., h, w] as seen in ``view``."""
    turns, mirror = view
    out = np.rot90(x, turns, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if mirror else out)


def from_view(x: np.ndarray, view: View) -> np.ndarray:
    """Undo ``to_view``: a map computed on the view, back in the tile's frame."""
    turns, mirror = view
    back = x[..., ::-1] if mirror else x
    return np.ascontiguousarray(np.rot90(back, -turns, axes=(-2, -1)))


Batch = np.ndarray | dict[str, np.ndarray]


def _batch_view(batch: Batch, view: View) -> Batch:
    if isinstance(batch, dict):
        return {k: to_view(v, view) for k, v in batch.items()}
    return to_view(batch, view)


class AugmentedPredictor(TilePredictor):
    """Wraps a predictor: runs it on every view of each batch and averages."""

    def __init__(self, inner: TilePredictor, mode: str) -> None:
        super().__init__(inner.spec)
        self.inner, self.views = inner, TTA_VIEWS[mode]
        self.runtime, self.device_type = inner.runtime, inner.device_type

    def __call__(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        probs, maps = [], []
        for view in self.views:
            p, att = self.inner(_batch_view(batch, view))
            probs.append(p)
            if att is not None:
                if att.shape[-1] != att.shape[-2] and view[0] % 2:
                    raise TileLabelError(f"{self.spec.model_id}'s attention maps are not "
                                         "square, so they cannot be turned; use --tta flips")
                maps.append(from_view(att, view))
        return np.mean(probs, 0), (np.mean(maps, 0) if maps else None)


def with_tta(predictor: TilePredictor, mode: str = "none") -> TilePredictor:
    """``predictor`` itself for ``none``, else it wrapped in the views of ``mode``."""
    return predictor if check_tta(mode) == "none" else AugmentedPredictor(predictor, mode)
