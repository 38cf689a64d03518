"""UC Merced Land Use, multi-label version (Chaudhuri et al. 2018).

Layout (``ucmerced:DIR``): ``DIR/Images/<scene class>/<name>.{tif,jpg,png}`` and
``DIR/LandUse_Multilabeled.txt``, tab separated, header ``IMAGE\\LABEL`` then the 17
label names, one 0/1 row per image.

Split (deterministic, documented): images are grouped by scene class (the name without
its trailing digits), each group is shuffled with ``random.Random(seed)`` after sorting
by name, and cut 70 % train / 15 % val / the rest test; so every scene class appears in
every split in the same proportion (per-class stratified).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import TileLabelError

LABEL_FILE = "LandUse_Multilabeled.txt"
EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15}
UCMERCED_GSD_M = 0.3


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    target: np.ndarray  # [C] float32 0/1


@dataclass
class UCMercedMultiLabel:
    root: Path
    labels: list[str]
    samples: list[Sample]

    def split(self, name: str, seed: int = 0) -> list[Sample]:
        """The ``train``, ``val`` or ``test`` samples (see module docstring)."""
        if name not in ("train", "val", "test"):
            raise TileLabelError(f"unknown split '{name}'; use train, val or test")
        groups: dict[str, list[Sample]] = {}
        for s in sorted(self.samples, key=lambda s: s.name):
            groups.setdefault(scene_class(s.name), []).append(s)
        chosen = []
        for _, members in sorted(groups.items()):
            random.Random(seed).shuffle(members)
            n_train = round(len(members) * SPLIT_FRACTIONS["train"])
            n_val = round(len(members) * SPLIT_FRACTIONS["val"])
            bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                      "test": (n_train + n_val, len(members))}[name]
            chosen += members[bounds[0]:bounds[1]]
        return chosen


def scene_class(image_name: str) -> str:
    return re.sub(r"\d+$", "", image_name)


def read_ucmerced(root: Path) -> UCMercedMultiLabel:
    """Read the label table and find every image; errors name what is missing."""
    root = Path(root)
    table = root / LABEL_FILE
    if not table.is_file():
        raise TileLabelError(f"{root} is not a UC Merced multi-label folder: {LABEL_FILE} "
                             "is missing (expected Images/<class>/<name>.tif and the label table)")
    lines = [ln.rstrip("\r\n") for ln in table.read_text().splitlines() if ln.strip()]
    header = lines[0].split("\t")
    labels = [h.strip() for h in header[1:]]
    samples = []
    for ln in lines[1:]:
        cells = ln.split("\t")
        name = cells[0].strip()
        if len(cells) != len(header):
            raise TileLabelError(f"{table}: row '{name}' has {len(cells) - 1} label values, "
                                 f"expected {len(labels)}")
        path = _find_image(root / "Images" / scene_class(name), name)
        if path is None:
            raise TileLabelError(f"{table} lists '{name}' but no image file "
                                 f"{name}{{{','.join(EXTENSIONS)}}} is in "
                                 f"{root / 'Images' / scene_class(name)}")
        samples.append(Sample(name, path, np.array([float(c) for c in cells[1:]], np.float32)))
    if not samples:
        raise TileLabelError(f"no image listed in {table} was found under {root / 'Images'}")
    return UCMercedMultiLabel(root, labels, samples)


def _find_image(folder: Path, name: str) -> Path | None:
    for ext in EXTENSIONS:
        if (folder / (name + ext)).is_file():
            return folder / (name + ext)
    return None
