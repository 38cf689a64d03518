"""The attention contract (DESIGN.md, "The engine's contract"), and the calibrations the
models share to honour it.

``ModelOutput.attention[b, c]`` is label c's map on tile b:
- in [0, 1], on one scale shared by every tile and label: no map is ever divided by its
  own maximum (or otherwise rescaled per tile or per label), so an analyst can compare
  overlays across a mosaic and between labels;
- high where the model finds label c's evidence, low elsewhere;
- dim on a tile where the model scores label c absent.

Each model derives the *shape* of its map from its own paper's mechanism (its docstring
says how) and brings it to that scale with a fixed transform from here. The paper models'
maps are then weighted by the label's probability (``presence_weighted``): where the
mechanism itself says nothing about presence (a spatial softmax always sums to one, a
cosine similarity is high for some location of every tile), the probability is what
makes an absent label's overlay dim. Weighting by a per-tile scalar does not change a
map's shape, so the correlation between two labels' maps is the mechanism's own.
"""
from __future__ import annotations

import numpy as np
import torch


def presence_weighted(maps: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """maps [B, C, h, w] in [0, 1] times each label's probability sigmoid(logits) [B, C]."""
    return maps * torch.sigmoid(logits.detach().float())[..., None, None].to(maps.dtype)


def distribution_to_unit(weights: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Attention weights that sum to 1 over ``dim`` (n locations) -> [0, 1] by the fixed
    map 1 - exp(-n a): 0 where a location gets nothing, 0.63 for a uniform spread, close
    to 1 on a location holding most of the weight. The same curve for every tile and
    label (a fixed function of n a, not a per-map rescaling)."""
    dims = (dim,) if isinstance(dim, int) else dim
    n = 1
    for d in dims:
        n *= weights.shape[d]
    return 1 - torch.exp(-n * weights.clamp(min=0))


def map_correlation(maps: np.ndarray) -> float:
    """Mean Pearson correlation between the different maps [N, K, h, w] of one tile,
    averaged over tiles (flat maps left out): how alike a model's label maps are."""
    values = []
    for tile in maps:
        flat = tile.reshape(len(tile), -1)
        flat = flat[flat.std(1) > 1e-6]
        if len(flat) > 1:
            c = np.corrcoef(flat)
            values.append(c[~np.eye(len(c), dtype=bool)].mean())
    return float(np.mean(values))
