"""Turning dataset samples into normalised training tensors.

Bands are stacked in the model's order, each resampled (bilinear) to ``image_px``: the
stacking step of every single-resolution model. Training augmentation suits overhead
imagery, which has no "up": a random one of the 8 flips/90-degree rotations, then a
random scale jitter (a centred-or-shifted crop of 80-100 % of the side, resized back).
Normalisation uses per-band mean/std measured on the training split.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.data.datasets import MultiLabelDataset, Sample
from engine.errors import TileLabelError

SCALE_JITTER = (0.8, 1.0)
STATS_SAMPLES = 256


def stack_bands(bands: dict[str, np.ndarray], order: list[str], px: int) -> torch.Tensor:
    """[len(order), px, px] float32: each band resized to px x px."""
    planes = []
    for name in order:
        if name not in bands:
            raise TileLabelError(f"the dataset has no band '{name}' that the model needs "
                                 f"(it has {', '.join(bands)})")
        t = torch.from_numpy(np.ascontiguousarray(bands[name], dtype=np.float32))[None, None]
        if t.shape[-2:] != (px, px):
            t = F.interpolate(t, size=(px, px), mode="bilinear", align_corners=False,
                              antialias=t.shape[-1] > px)
        planes.append(t[0, 0])
    return torch.stack(planes)


Batch = torch.Tensor | dict[str, torch.Tensor]


def to_device(x: Batch, device: torch.device) -> Batch:
    """Move a batch (one tensor, or a dict of tensors for multi-resolution models)."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def batch_len(x: Batch) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 8, (1,), generator=g))
    x = torch.rot90(x, k % 4, dims=(1, 2))
    if k >= 4:
        x = torch.flip(x, dims=(2,))
    px = x.shape[-1]
    scale = float(torch.empty(1).uniform_(*SCALE_JITTER, generator=g))
    side = max(8, round(px * scale))
    if side < px:
        y0, x0 = (int(torch.randint(0, px - side + 1, (1,), generator=g)) for _ in range(2))
        x = F.interpolate(x[None, :, y0:y0 + side, x0:x0 + side], size=(px, px),
                          mode="bilinear", align_corners=False)[0]
    return x


def band_statistics(dataset: MultiLabelDataset, samples: list[Sample], bands: list[str],
                    px: int) -> tuple[list[float], list[float]]:
    """Per-band mean and std over (up to 256 evenly spaced) training samples."""
    step = max(1, len(samples) // STATS_SAMPLES)
    stack = torch.stack([stack_bands(dataset.read(s), bands, px) for s in samples[::step]])
    mean = stack.mean(dim=(0, 2, 3))
    std = stack.std(dim=(0, 2, 3)).clamp(min=1e-4)
    return [float(v) for v in mean], [float(v) for v in std]


class TrainingView(Dataset):
    """A torch Dataset over (dataset, sample) pairs, possibly from several datasets."""

    def __init__(self, items: list[tuple[MultiLabelDataset, Sample]], bands: list[str],
                 px: int, mean: list[float], std: list[float], train: bool, seed: int = 0) -> None:
        self.items, self.bands, self.px, self.train = items, bands, px, train
        self.mean = torch.tensor(mean)[:, None, None]
        self.std = torch.tensor(std)[:, None, None]
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        dataset, sample = self.items[i]
        x = stack_bands(dataset.read(sample), self.bands, self.px)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
            x = augment(x, g)
        return (x - self.mean) / self.std, torch.from_numpy(sample.target), i
