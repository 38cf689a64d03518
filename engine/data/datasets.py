"""Multi-label training datasets behind one interface, named ``KIND:PATH``.

Every dataset knows its label names, its bands, its ground sample distance, its samples
(name, 0/1 target, source), its deterministic splits, and how to read one sample as a
dict band name -> float32 array in unit range at the band's native resolution (so a
multi-resolution model can consume Sentinel-2 bands without resampling them to one).

A dataset with ``complete_labels = False`` is weakly labelled: a target may hold NaN for
"not known" (an object-detection set knows its own classes only), and it may name fewer
labels than the model. ``aligned_to`` maps its targets onto a model's vocabulary, unknown
for every label it does not name.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import TileLabelError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    name: str
    target: np.ndarray  # [C] float32 0/1
    source: str         # file, folder or key the dataset reads


class MultiLabelDataset(ABC):
    """Base of the dataset readers; subclasses fill the fields and implement ``read``."""

    kind: str = ""
    complete_labels: bool = True  # False: weakly labelled, NaN targets mean "not known"

    def __init__(self, root: Path, labels: list[str], bands: list[str], gsd_m: float,
                 samples: list[Sample], default_px: int) -> None:
        self.root = Path(root)
        self.labels = labels
        self.bands = bands
        self.gsd_m = gsd_m
        self.samples = samples
        self.default_px = default_px
        self.warnings: list[str] = []  # things skipped while opening, for the job's log

    def __repr__(self) -> str:
        return f"{self.kind}:{self.root} ({len(self.samples)} samples, {len(self.labels)} labels)"

    @abstractmethod
    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        """Band name -> [H, W] float32 in unit range (reflectance for Sentinel-2)."""

    def split(self, name: str, seed: int = 0) -> list[Sample]:
        """Samples of one split; by default a stable hash of the name (70/15/15)."""
        _check_split(name)
        return [s for s in self.samples if hash_split(s.name, seed) == name]

    def targets(self, samples: list[Sample]) -> np.ndarray:
        return np.stack([s.target for s in samples]) if samples else np.zeros((0, len(self.labels)))

    def aligned_to(self, labels: list[str]) -> "MultiLabelDataset":
        """This dataset with its targets in ``labels``' order, unknown (NaN) for the labels
        it does not name; only a weakly labelled dataset may name fewer labels."""
        if self.labels == labels:
            return self
        foreign = [l for l in self.labels if l not in labels]
        if self.complete_labels or foreign:
            raise TileLabelError(
                f"datasets disagree on labels: {self!r} has "
                + (f"labels the model does not ({', '.join(foreign)})" if foreign else
                   f"{len(self.labels)} labels where the model has {len(labels)}")
                + "; train on one vocabulary")
        index = [self.labels.index(l) if l in self.labels else -1 for l in labels]
        aligned = copy.copy(self)
        aligned.labels = list(labels)
        aligned.samples = [dataclasses.replace(s, target=np.array(
            [s.target[i] if i >= 0 else np.nan for i in index], np.float32))
            for s in self.samples]
        return aligned


def _check_split(name: str) -> None:
    if name not in SPLITS:
        raise TileLabelError(f"unknown split '{name}'; use one of {', '.join(SPLITS)}")


def hash_split(name: str, seed: int = 0, fractions: tuple[float, float] = (0.70, 0.15)) -> str:
    """Deterministic split of one sample from a hash of its name and the seed."""
    u = int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else "val" if u < sum(fractions) else "test"


def open_dataset(spec: str, bands: list[str] | None = None) -> MultiLabelDataset:
    """Open ``KIND:PATH`` (ucmerced, bigearthnet-v1, bigearthnet-v2, gpkg, nwpu-vhr10).

    ``bands`` chooses the bands of a ``gpkg`` store's rasters (default red, green, blue).
    """
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise TileLabelError(f"a dataset is named KIND:PATH (e.g. ucmerced:/data/UCMerced); "
                             f"got {spec!r}")
    root = Path(path)
    if not root.exists():
        raise TileLabelError(f"dataset path not found: {root}")
    if kind == "ucmerced":
        from engine.data.ucmerced import UCMercedMultiLabel
        return UCMercedMultiLabel.open(root)
    if kind == "bigearthnet-v1":
        from engine.data.bigearthnet import BigEarthNetV1
        return BigEarthNetV1.open(root)
    if kind == "bigearthnet-v2":
        from engine.data.bigearthnet import BigEarthNetV2
        return BigEarthNetV2.open(root)
    if kind == "gpkg":
        from engine.data.store_dataset import StoreDataset
        return StoreDataset.open(root, bands or ["red", "green", "blue"])
    if kind == "nwpu-vhr10":
        from engine.data.boxes import NWPUVHR10Crops
        return NWPUVHR10Crops.open(root)
    raise TileLabelError(f"unknown dataset kind '{kind}'; use ucmerced, bigearthnet-v1, "
                         "bigearthnet-v2, gpkg or nwpu-vhr10")
