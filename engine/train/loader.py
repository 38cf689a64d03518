"""Turning dataset samples into normalised training tensors.

Single-resolution models: bands are stacked in the model's order, each resampled
(bilinear) to ``image_px``. Training augmentation suits overhead imagery, which has no
"up": a random one of the 8 flips/90-degree rotations, then a random scale jitter (a
centred-or-shifted crop of 80-100 % of the side, resized back).

Multi-resolution models (``band_groups`` in arch_config, K-Branch): a sample is a dict
group name -> [n_bands, px_g, px_g], every band at its group's native pixel size. A band
already at that size is used as it is (BigEarthNet); a band on a finer grid that is a
whole multiple of it (tiles exported from a store) is averaged down to it; anything else
is refused, never interpolated. Augmentation applies the same flip/rotation to every
group and no scale jitter or mosaic (which would resample each group and could not keep a
60 m group aligned with the 10 m one to the pixel).

How strong the jitter is comes from an ``Augmentation`` (a recipe's ``[augment]`` table):
the crop side range, brightness/contrast jitter on the [0, 1] pixel values (before
normalisation, the same for every band, so band ratios stay true) and, if asked, a colour
jitter (a gain per band), a Gaussian blur and a mosaic (four training tiles at half their
side in one, labelled with the union of their labels: a tile that spans several scenes, as
an analyst's tiles do where land cover changes).

Normalisation uses per-band mean/std measured on the training split.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dataclasses import dataclass, replace

from torch.utils.data import Dataset

from engine.band_groups import BandGroup
from engine.data.datasets import MultiLabelDataset, Sample
from engine.errors import TileLabelError

STATS_SAMPLES = 256


@dataclass
class Augmentation:
    """Training augmentation of single-resolution tiles (a recipe's ``[augment]`` table).

    scale: range of the random view's side as a fraction of the tile, resized to the tile.
        Below 1 a crop is zoomed in (0.5: 0.3 m tiles look like 0.15 m ones); above 1 the
        tile is shrunk and mirrored at its edges (2: they look like 0.6 m ones, as coarser
        imagery does); presence labels stay true either way.
    brightness: pixel values multiplied by a factor in [1 - b, 1 + b].
    contrast: deviations from the tile's mean multiplied by a factor in [1 - c, 1 + c].
    colour: each band multiplied by its own factor in [1 - c, 1 + c] (another sensor's or
        another day's colour balance); 0 keeps band ratios true.
    blur: on half the tiles, a Gaussian blur of standard deviation up to this many pixels
        (softer imagery: resampled, compressed or hazy).
    mosaic: the share of training tiles shown as a 2 x 2 mosaic of themselves and three
        other training tiles, each augmented on its own (its scale jitter zooming in only)
        and shrunk to half the side (a 2x zoom out: 0.6 m looks for 0.3 m tiles). A mosaic's
        target is the union of the four: a label is present if present in any quarter,
        absent if known absent in all four, unknown otherwise. Every label of every
        quarter stays visible, so the union is exact, and a label's evidence sits in one
        part of the tile: the attention has to find where.
    """

    scale: tuple[float, float] = (0.8, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0
    colour: float = 0.0
    blur: float = 0.0
    mosaic: float = 0.0

    def __post_init__(self) -> None:
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        lo, hi = self.scale
        if not (0.1 <= lo <= hi <= 4.0):
            raise TileLabelError(f"augment scale {list(self.scale)} must be two fractions "
                                 "0.1 <= low <= high <= 4 of the tile side")
        for name in ("brightness", "contrast", "colour"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TileLabelError(f"augment {name} must be in [0, 1), got "
                                     f"{getattr(self, name)}")
        if not 0.0 <= self.blur <= 8.0:
            raise TileLabelError(f"augment blur must be 0-8 pixels (a Gaussian's standard "
                                 f"deviation), got {self.blur}")
        if not 0.0 <= self.mosaic <= 1.0:
            raise TileLabelError(f"augment mosaic is the share of tiles shown as a mosaic, "
                                 f"0-1, got {self.mosaic}")

    def for_quarter(self) -> "Augmentation":
        """The augmentation of one quarter of a mosaic: the same, zooming in only (the
        mosaic's halving is its zoom out) and no mosaic within it."""
        return replace(self, scale=(min(self.scale[0], 1.0), 1.0), mosaic=0.0)


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


def native_band(array: np.ndarray, name: str, px: int) -> torch.Tensor:
    """[px, px] float32 of one band at its native pixel size, without interpolation: as it
    is when already px x px, averaged over whole blocks when on a k-times finer grid."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    h, w = t.shape
    if (h, w) == (px, px):
        return t
    if h == w and h > px and h % px == 0:
        return F.avg_pool2d(t[None, None], h // px)[0, 0]
    raise TileLabelError(f"band '{name}' is {w} x {h} px but the model reads it at its native "
                         f"{px} x {px} px; use data at the model's resolution (e.g. whole "
                         "BigEarthNet patches) and leave --image-size unset")


def stack_groups(bands: dict[str, np.ndarray], groups: list[BandGroup]) -> dict[str, torch.Tensor]:
    """Group name -> [n_bands, px, px]: each group's bands at its native pixel size."""
    out = {}
    for g in groups:
        missing = [b for b in g.bands if b not in bands]
        if missing:
            raise TileLabelError(f"the dataset has no band(s) {', '.join(missing)} that the "
                                 f"model needs (it has {', '.join(bands)})")
        out[g.name] = torch.stack([native_band(bands[b], b, g.px) for b in g.bands])
    return out


Batch = torch.Tensor | dict[str, torch.Tensor]


def to_device(x: Batch, device: torch.device) -> Batch:
    """Move a batch (one tensor, or a dict of tensors for multi-resolution models)."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def batch_len(x: Batch) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/90-degree rotations of [n, H, W]."""
    x = torch.rot90(x, k % 4, dims=(1, 2))
    return torch.flip(x, dims=(2,)) if k >= 4 else x


def augment_groups(x: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """The same random flip/rotation for every group; no resampling."""
    k = int(torch.randint(0, 8, (1,), generator=g))
    return {name: dihedral(t, k) for name, t in x.items()}


def _uniform(lo: float, hi: float, g: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=g))


def _zoom_out(x: torch.Tensor, small: int, g: torch.Generator) -> torch.Tensor:
    """[n, px, px] shrunk to ``small`` px and mirrored out (repeatedly, for zooms beyond
    2x) to px again, the original placed at random."""
    px = x.shape[-1]
    out = F.interpolate(x[None], size=(small, small), mode="bilinear",
                        align_corners=False, antialias=True)
    while out.shape[-1] < px:  # reflection adds less than the current side per pass
        size = out.shape[-1]
        grow = min(px - size, 2 * (size - 1))
        before = int(torch.randint(max(0, grow - size + 1), min(grow, size - 1) + 1, (1,),
                                   generator=g))
        out = F.pad(out, (before, grow - before, before, grow - before), mode="reflect")
    return out[0]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """[n, px, px] blurred by a separable Gaussian of ``sigma`` px (edges mirrored)."""
    radius = min(max(1, int(3 * sigma + 0.5)), x.shape[-1] - 1)  # reflect needs < px
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    return y[0]


def augment(x: torch.Tensor, g: torch.Generator, how: Augmentation = Augmentation()) -> torch.Tensor:
    """A random flip/rotation, crop-and-resize, blur and brightness/contrast/colour change
    of [n, px, px] pixel values in [0, 1] (before normalisation)."""
    k = int(torch.randint(0, 8, (1,), generator=g))
    x = dihedral(x, k)
    px = x.shape[-1]
    scale = _uniform(*how.scale, g)
    side = max(8, round(px * scale))
    if side < px:
        y0, x0 = (int(torch.randint(0, px - side + 1, (1,), generator=g)) for _ in range(2))
        x = F.interpolate(x[None, :, y0:y0 + side, x0:x0 + side], size=(px, px),
                          mode="bilinear", align_corners=False)[0]
    elif side > px:
        x = _zoom_out(x, max(8, round(px / scale)), g)
    if how.blur > 0 and _uniform(0, 1, g) < 0.5:
        x = _gaussian_blur(x, _uniform(0.3, how.blur, g))
    if how.contrast > 0:
        mean = x.mean()
        x = (x - mean) * _uniform(1 - how.contrast, 1 + how.contrast, g) + mean
    if how.brightness > 0:
        x = x * _uniform(1 - how.brightness, 1 + how.brightness, g)
    if how.colour > 0:
        gains = torch.empty(x.shape[0]).uniform_(1 - how.colour, 1 + how.colour, generator=g)
        x = x * gains[:, None, None]
    return x


def union_of_targets(targets: torch.Tensor) -> torch.Tensor:
    """[C] union of [n, C] presence targets: 1 where any is 1, else NaN (not known) where
    any is NaN, else 0."""
    present = (targets == 1).any(dim=0)
    unknown = torch.isnan(targets).any(dim=0)
    out = torch.zeros(targets.shape[1], dtype=targets.dtype)
    out[unknown] = float("nan")
    out[present] = 1.0
    return out


def mosaic(quarters: list[torch.Tensor]) -> torch.Tensor:
    """[n, px, px] from four [n, px, px] tiles, each shrunk to half the side, placed
    top-left, top-right, bottom-left, bottom-right."""
    px = quarters[0].shape[-1]
    half = px // 2
    small = [F.interpolate(q[None], size=(half, half), mode="bilinear", align_corners=False,
                           antialias=True)[0] for q in quarters]
    top = torch.cat(small[:2], dim=2)
    bottom = torch.cat(small[2:], dim=2)
    out = torch.cat([top, bottom], dim=1)
    if out.shape[-1] != px:  # an odd side: back to px by nearest neighbour (one row
        # and one column repeated)
        out = F.interpolate(out[None], size=(px, px), mode="nearest")[0]
    return out


def band_statistics(dataset: MultiLabelDataset, samples: list[Sample], bands: list[str],
                    px: int, groups: list[BandGroup] | None = None) -> tuple[list[float], list[float]]:
    """Per-band mean and std over (up to 256 evenly spaced) training samples, in ``bands``
    order; with ``groups``, each band measured at its native pixel size."""
    step = max(1, len(samples) // STATS_SAMPLES)
    chosen = samples[::step]
    if groups is None:
        stack = torch.stack([stack_bands(dataset.read(s), bands, px) for s in chosen])
        mean, std = stack.mean(dim=(0, 2, 3)), stack.std(dim=(0, 2, 3)).clamp(min=1e-4)
        return [float(v) for v in mean], [float(v) for v in std]
    per_band: dict[str, torch.Tensor] = {}
    reads = [stack_groups(dataset.read(s), groups) for s in chosen]
    for g in groups:
        stack = torch.stack([r[g.name] for r in reads])        # [N, n_bands, px_g, px_g]
        for i, band in enumerate(g.bands):
            per_band[band] = stack[:, i]
    return ([float(per_band[b].mean()) for b in bands],
            [float(per_band[b].std().clamp(min=1e-4)) for b in bands])


class TrainingView(Dataset):
    """A torch Dataset over (dataset, sample) pairs, possibly from several datasets.

    Items are (x, target, index); x is [bands, px, px], or with ``groups`` (a
    multi-resolution model) a dict group name -> [n_bands, px_g, px_g] at native size.
    """

    def __init__(self, items: list[tuple[MultiLabelDataset, Sample]], bands: list[str],
                 px: int, mean: list[float], std: list[float], train: bool, seed: int = 0,
                 groups: list[BandGroup] | None = None,
                 augmentation: Augmentation = Augmentation()) -> None:
        self.items, self.bands, self.px, self.train = items, bands, px, train
        self.augmentation = augmentation
        self.mean = torch.tensor(mean)[:, None, None]
        self.std = torch.tensor(std)[:, None, None]
        self.groups = groups
        if groups is not None:
            index = {b: i for i, b in enumerate(bands)}
            self.group_norm = {g.name: (self.mean[[index[b] for b in g.bands]],
                                        self.std[[index[b] for b in g.bands]]) for g in groups}
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Batch, torch.Tensor, int]:
        dataset, sample = self.items[i]
        g = (torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
             if self.train else None)
        target = torch.from_numpy(sample.target)
        if self.groups is not None:
            x = stack_groups(dataset.read(sample), self.groups)
            x = augment_groups(x, g) if g is not None else x
            return {k: (v - self.group_norm[k][0]) / self.group_norm[k][1]
                    for k, v in x.items()}, target, i
        if g is not None and self.augmentation.mosaic > 0 and \
                _uniform(0, 1, g) < self.augmentation.mosaic:  # no draw without: seeds pair
            x, target = self._mosaic(i, g)
        else:
            x = stack_bands(dataset.read(sample), self.bands, self.px)
            x = augment(x, g, self.augmentation) if g is not None else x
        return (x - self.mean) / self.std, target, i

    def _mosaic(self, i: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Item i and three other items drawn at random, as one mosaic tile and its target."""
        others = torch.randint(0, len(self.items), (3,), generator=g).tolist()
        how = self.augmentation.for_quarter()
        tiles, targets = [], []
        for j in [i, *others]:
            dataset, sample = self.items[j]
            tiles.append(augment(stack_bands(dataset.read(sample), self.bands, self.px), g, how))
            targets.append(torch.from_numpy(sample.target))
        order = torch.randperm(4, generator=g).tolist()  # item i not always top-left
        return mosaic([tiles[k] for k in order]), union_of_targets(torch.stack(targets))
