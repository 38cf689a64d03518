"""Box-annotated images as weakly labelled training tiles, ``nwpu-vhr10:DIR``.

An object-detection set says where some classes are, not everything a tile holds, so its
tiles are *weakly labelled*: some labels are known, the rest unknown (NaN in the target).
The trainer aligns them to the model's vocabulary (unknown for every label the set does
not name) and the losses skip unknown entries (engine.train.losses), so these tiles
teach the labels their boxes speak for and nothing else.

NWPU VHR-10 layout (Cheng et al. 2014): ``DIR/images/NNN.jpg`` and
``DIR/ground_truth/NNN.txt``, one box a line: ``(x1,y1),(x2,y2),class`` with class 1
airplane, 2 ship, 3 storage tank, 4 baseball diamond, 5 tennis court, 6 basketball court,
7 ground track field, 8 harbor, 9 bridge, 10 vehicle. Mapped to UC Merced's labels:
airplane, ship, tanks, court (tennis and basketball) and cars (vehicle); the other
classes name no UC Merced label and are not used.

Tiles: for every image, up to ``CROPS_PER_IMAGE`` of its mapped boxes (chosen by a
generator seeded with the image's name), each in one crop of ``TILE_PX`` image pixels
that holds the box at a random offset. A crop's target, per mapped label:
- 1 where a box of the label has at least half its area inside the crop;
- unknown where a box of the label is cut by the crop's edge with less inside;
- 0 where no box of the label touches the crop: NWPU annotates every object of its ten
  classes on its positive images, so a label without a box is absent.
The imagery carries no ground sample distance (Google Earth crops of about 0.5-2 m, a few
0.08 m Vaihingen colour-infrared ones): crops are cut as they come, as
benchmarks/attention_localisation.py shows them to a model.

Split by image, never by crop, so no image is in two splits: a stable hash of the image
name and the split seed puts half the images in ``train`` and the rest in ``test``; there
is no ``val`` split, because the epoch a run keeps and its thresholds are chosen on
complete labels. benchmarks/attention_localisation.py leaves out every image a model
trained on (model.json's ``training.train_images``).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.datasets import MultiLabelDataset, Sample, _check_split, hash_split
from engine.data.images import read_chip
from engine.errors import TileLabelError

NWPU_CLASSES = {1: "airplane", 2: "ship", 3: "tanks", 5: "court", 6: "court", 10: "cars"}
NWPU_LABELS = sorted(set(NWPU_CLASSES.values()))
TILE_PX = 256
CROPS_PER_IMAGE = 3
TRAIN_FRACTION = 0.5
NOMINAL_GSD_M = 1.0  # not recorded in the imagery: about 0.5-2 m (see the docstring)
BOX_LINE = re.compile(r"\((\d+),(\d+)\),\((\d+),(\d+)\),(\d+)")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels


@dataclass(frozen=True)
class CropSample(Sample):
    window: Box = (0, 0, 0, 0)  # x0, y0, x1, y1 of the crop in the image
    image: str = ""             # the image's name: splits and hold-outs go by it


def crop_name(image_stem: str, k: int) -> str:
    """The sample name of an image's k-th crop (model.json lists these as train images)."""
    return f"{image_stem}#{k}"


def image_of(sample_name: str) -> str | None:
    """The image a crop's sample name comes from; None for a name that is not a crop's."""
    stem, sep, k = sample_name.rpartition("#")
    return stem if sep and k.isdigit() else None


def read_nwpu_boxes(path: Path) -> list[tuple[str, Box]]:
    """(label, box) of every box of a mapped class in one ground-truth file."""
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = BOX_LINE.match(line.replace(" ", ""))
        if m is None:
            raise TileLabelError(f"{path}, line {number}: {line.strip()!r} is not a box "
                                 "'(x1,y1),(x2,y2),class'")
        if int(m[5]) in NWPU_CLASSES:
            boxes.append((NWPU_CLASSES[int(m[5])], (int(m[1]), int(m[2]), int(m[3]), int(m[4]))))
    return boxes


def nwpu_images(root: Path) -> list[tuple[Path, list[tuple[str, Box]]]]:
    """Every NWPU image with at least one box of a mapped class, and those boxes."""
    found = []
    for gt in sorted((root / "ground_truth").glob("*.txt")):
        boxes = read_nwpu_boxes(gt)
        image = root / "images" / f"{gt.stem}.jpg"
        if boxes and image.is_file():
            found.append((image, boxes))
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without reading its pixels."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():  # plain JPEGs: no georeferencing, as expected
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.width, ds.height


def inside_fraction(box: Box, window: Box) -> float:
    """The share of ``box``'s area inside ``window``."""
    x0, y0 = max(box[0], window[0]), max(box[1], window[1])
    x1, y1 = min(box[2], window[2]), min(box[3], window[3])
    area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
    return max(0, x1 - x0) * max(0, y1 - y0) / area


def crop_target(boxes: list[tuple[str, Box]], window: Box, labels: list[str]) -> np.ndarray:
    """1 / NaN / 0 per label: a box mostly inside, only cut boxes, no box (docstring)."""
    target = np.zeros(len(labels), np.float32)
    for label, box in boxes:
        share = inside_fraction(box, window)
        c = labels.index(label)
        if share >= 0.5:
            target[c] = 1.0
        elif share > 0 and target[c] != 1.0:
            target[c] = np.nan
    return target


def box_crops(image: Path, boxes: list[tuple[str, Box]], width: int, height: int,
              labels: list[str], size: int = TILE_PX,
              per_image: int = CROPS_PER_IMAGE) -> list[CropSample]:
    """Up to ``per_image`` crops of ``size`` px, each holding one box at a random offset."""
    seed = int(hashlib.sha1(image.name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    crops: list[CropSample] = []
    if width < size or height < size:
        return crops
    for k in rng.permutation(len(boxes))[:per_image]:
        x0, y0, x1, y1 = boxes[k][1]
        if x1 - x0 > size or y1 - y0 > size:
            continue
        cx = int(rng.integers(max(0, x1 - size), min(x0, width - size) + 1))
        cy = int(rng.integers(max(0, y1 - size), min(y0, height - size) + 1))
        window = (cx, cy, cx + size, cy + size)
        crops.append(CropSample(crop_name(image.stem, len(crops)), crop_target(boxes, window, labels),
                                str(image), window=window, image=image.stem))
    return crops


class NWPUVHR10Crops(MultiLabelDataset):
    kind = "nwpu-vhr10"
    complete_labels = False

    @classmethod
    def open(cls, root: Path) -> "NWPUVHR10Crops":
        root = Path(root)
        if not (root / "ground_truth").is_dir() or not (root / "images").is_dir():
            raise TileLabelError(f"{root} is not an NWPU VHR-10 folder: it needs images/NNN.jpg "
                                 "and ground_truth/NNN.txt")
        samples: list[Sample] = []
        for image, boxes in nwpu_images(root):
            width, height = image_size(image)
            samples += box_crops(image, boxes, width, height, NWPU_LABELS)
        if not samples:
            raise TileLabelError(f"{root} holds no box of {', '.join(NWPU_LABELS)} that fits a "
                                 f"{TILE_PX} px crop")
        return cls(root, list(NWPU_LABELS), ["red", "green", "blue"], NOMINAL_GSD_M, samples,
                   TILE_PX)

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        assert isinstance(sample, CropSample)
        x0, y0, x1, y1 = sample.window
        pixels = read_chip(Path(sample.source))[:, y0:y1, x0:x1]
        if pixels.shape[0] < 3:  # a grey image: the same plane as red, green and blue
            pixels = np.repeat(pixels[:1], 3, 0)
        return dict(zip(self.bands, pixels[:3]))

    def split(self, name: str, seed: int = 0) -> list[Sample]:
        """By image: half the images train, the rest test, none val (docstring)."""
        _check_split(name)
        return [s for s in self.samples
                if hash_split(s.image, seed, (TRAIN_FRACTION, 0.0)) == name]
