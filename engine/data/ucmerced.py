"""UC Merced Land Use, multi-label version (Chaudhuri et al. 2018), ``ucmerced:DIR``.

Layout: ``DIR/Images/<scene class>/<name>.{tif,jpg,png}`` and
``DIR/LandUse_Multilabeled.txt``, tab separated, header ``IMAGE\\LABEL`` then the 17
label names, one 0/1 row per image. RGB, 0.3 m/px, 256 x 256 px.

Split (deterministic, per-class stratified): images are grouped by scene class (the name
without its trailing digits); each group, sorted by name, is shuffled with
``random.Random(seed)`` and cut 70 % train / 15 % val / the rest test, so every scene
class appears in every split in the same proportion.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np

from engine.data.datasets import MultiLabelDataset, Sample, _check_split
from engine.data.images import read_chip
from engine.errors import TileLabelError

LABEL_FILE = "LandUse_Multilabeled.txt"
EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15}
UCMERCED_GSD_M = 0.3
UCMERCED_BANDS = ["red", "green", "blue"]


def scene_class(image_name: str) -> str:
    return re.sub(r"\d+$", "", image_name)


class UCMercedMultiLabel(MultiLabelDataset):
    kind = "ucmerced"

    @classmethod
    def open(cls, root: Path) -> "UCMercedMultiLabel":
        """Read the label table and find every image; errors name what is missing."""
        root = Path(root)
        table = root / LABEL_FILE
        if not table.is_file():
            raise TileLabelError(f"{root} is not a UC Merced multi-label folder: {LABEL_FILE} "
                                 "is missing (expected Images/<class>/<name>.tif and the table)")
        lines = [ln.rstrip("\r\n") for ln in table.read_text().splitlines() if ln.strip()]
        header = lines[0].split("\t")
        labels = [h.strip() for h in header[1:]]
        samples = [cls._sample(root, table, ln, len(labels)) for ln in lines[1:]]
        if not samples:
            raise TileLabelError(f"{table} lists no images")
        return cls(root, labels, list(UCMERCED_BANDS), UCMERCED_GSD_M, samples, 256)

    @staticmethod
    def _sample(root: Path, table: Path, line: str, n_labels: int) -> Sample:
        cells = line.split("\t")
        name = cells[0].strip()
        if len(cells) != n_labels + 1:
            raise TileLabelError(f"{table}: row '{name}' has {len(cells) - 1} label values, "
                                 f"expected {n_labels}")
        folder = root / "Images" / scene_class(name)
        path = next((folder / (name + e) for e in EXTENSIONS if (folder / (name + e)).is_file()),
                    None)
        if path is None:
            raise TileLabelError(f"{table} lists '{name}' but no image file {name}"
                                 f"{{{','.join(EXTENSIONS)}}} is in {folder}")
        try:
            target = np.array([float(c) for c in cells[1:]], np.float32)
        except ValueError as exc:
            raise TileLabelError(f"{table}: row '{name}' has a label value that is not 0/1") from exc
        return Sample(name, target, str(path))

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        rgb = read_chip(Path(sample.source))
        if rgb.shape[0] < 3:
            raise TileLabelError(f"{sample.source} has {rgb.shape[0]} bands; UC Merced images are RGB")
        return dict(zip(self.bands, rgb[:3]))

    def split(self, name: str, seed: int = 0) -> list[Sample]:
        _check_split(name)
        groups: dict[str, list[Sample]] = {}
        for s in sorted(self.samples, key=lambda s: s.name):
            groups.setdefault(scene_class(s.name), []).append(s)
        chosen: list[Sample] = []
        for _, members in sorted(groups.items()):
            random.Random(seed).shuffle(members)
            n_train = round(len(members) * SPLIT_FRACTIONS["train"])
            n_val = round(len(members) * SPLIT_FRACTIONS["val"])
            lo, hi = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                      "test": (n_train + n_val, len(members))}[name]
            chosen += members[lo:hi]
        return chosen
