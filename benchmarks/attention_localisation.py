"""Does a label's attention land on that label's objects? The pointing game on real boxes.

Data (../shared/data, research use, never copied into the repo):
- NWPU VHR-10 (odd-numbered half): Google Earth crops at roughly 0.5-2 m per pixel plus
  a few 0.08 m Vaihingen colour-infrared ones; classes mapped to UC Merced labels:
  airplane -> airplane, ship -> ship, storage tank -> tanks, tennis and basketball court
  -> court, vehicle -> cars.
- DOTA samples P0706 (ships, 0.256 m) and P1888 (vehicles, 0.266 m).

Images a model trained on (``nwpu-vhr10`` crops as weakly labelled data, model.json's
``training.train_images``) are left out for every model of the run, so the models compare
on the same held-out images; the run says how many.

For every box of a mapped class that fits, one crop of the model's tile size (in image
pixels, not resampled: the imagery's GSD differs from the model's 0.3 m, which is part
of what this measures) holds the box at a random offset (seeded). On each crop:
- pointing: a hit when the maximum of that label's attention (upsampled bilinearly to
  the crop) falls inside a box of that class, with 15 px tolerance;
- baselines in the same run: the crop centre, and the maximum of the map of a label
  absent from the crop (a label with no box there, drawn at random among the labels the
  benchmark maps: a model whose maps are all one map points as well with it);
- presence recall: the share of crops whose label probability reaches the model's
  threshold;
- presence precision, per mapped label over every crop of the set: of the crops where the
  model says the label is present, the share that hold a box of it (any part of one).
  NWPU and DOTA box every object of their classes, so a crop without a box of the label
  does not show one (a car in a crop cut for an airplane is boxed too);
- CM-GM only, part pointing: the same game played with the label's assigned RMAM part
  map M_n (Eq. 1) instead of its overlay: do the parts themselves land on objects?
``--zoom Z`` cuts crops of S / Z image pixels and enlarges them to the model's S (boxes
scaled with them), as annotate resamples imagery to the model's ground sampling distance:
NWPU's 0.5-2 m at Z = 2 looks like 0.25-1 m. It tells a scale failure from a content one.
Also, on the UC Merced validation split (full label sets): the mean correlation between
the maps of different labels on one tile, and the mean brightness of present and absent
labels' maps.

``--tta flips|dihedral`` predicts each crop in 4 or 8 flipped and turned views and
averages them, as annotate --tta does (the UC Merced map statistics stay without).

Usage: python benchmarks/attention_localisation.py MODEL_DIR [MODEL_DIR ...]
       [--zoom Z] [--tta MODE] [--markdown FILE]  (append the table to FILE)
       [--json FILE]  (the figures as JSON: what make default-model puts in the card)
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import torch
import torch.nn.functional as F

from engine.data.boxes import NWPU_CLASSES, image_of, nwpu_images
from engine.data.datasets import open_dataset
from engine.models.attention import map_correlation
from engine.infer.predictor import Predictor
from engine.infer.tta import TTA_VIEWS, with_tta
from engine.models.modelfile import load_model
from engine.models.spec import read_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DOTA_CLASSES = {"ship": "ship", "small-vehicle": "cars", "large-vehicle": "cars"}
TOLERANCE = 15


@dataclass
class Crop:
    image: np.ndarray                 # [3, S, S] uint8
    label: str                        # the label of the box the crop was made for
    boxes: dict[str, list[tuple[int, int, int, int]]]  # label -> (x0, y0, x1, y1) in the crop
    source: str


def read_rgb(path: Path) -> np.ndarray:
    with warnings.catch_warnings():  # plain JPEG/PNG crops: no georeferencing, as expected
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        return ds.read([1, 2, 3]) if ds.count >= 3 else np.repeat(ds.read([1]), 3, 0)


def trained_nwpu_images(model_dirs: list[Path]) -> set[str]:
    """The NWPU images (file stems) any of the models trained on."""
    names = (n for d in model_dirs for n in read_spec(d).training.get("train_images", ()))
    return {stem for stem in map(image_of, names) if stem is not None}


def nwpu_boxes(root: Path, leave_out: set[str]) -> list:
    """(image, boxes) of the NWPU images not in ``leave_out``."""
    return [(path, boxes) for path, boxes in nwpu_images(root) if path.stem not in leave_out]


def dota_boxes(root: Path) -> list[tuple[Path, list[tuple[str, tuple[int, int, int, int]]]]]:
    found = []
    for txt in sorted(root.glob("*.txt")):
        boxes = []
        for line in txt.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 9 and parts[8] in DOTA_CLASSES:
                xs, ys = [float(v) for v in parts[0:8:2]], [float(v) for v in parts[1:8:2]]
                boxes.append((DOTA_CLASSES[parts[8]],
                              (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))))
        found.append((txt.with_suffix(".png"), boxes))
    return found


def make_crops(sources, size: int, rng: np.random.Generator, per_image: int,
               zoom: float = 1.0) -> list[Crop]:
    """Crops of ``size`` model pixels, cut as size / zoom image pixels and enlarged."""
    model_px, crops = size, []
    size = round(size / zoom)  # image pixels cut for each crop
    for path, boxes in sources:
        image = read_rgb(path)
        h, w = image.shape[1:]
        if h < size or w < size:
            continue
        order = rng.permutation(len(boxes))[:per_image]
        for i in order:
            label, (x0, y0, x1, y1) = boxes[i]
            if x1 - x0 > size or y1 - y0 > size:
                continue
            cx = int(rng.integers(max(0, x1 - size), min(x0, w - size) + 1))
            cy = int(rng.integers(max(0, y1 - size), min(y0, h - size) + 1))
            inside: dict[str, list] = {}
            for other, (a0, b0, a1, b1) in boxes:
                a0, b0, a1, b1 = a0 - cx, b0 - cy, a1 - cx, b1 - cy
                if a1 > 0 and b1 > 0 and a0 < size and b0 < size:
                    inside.setdefault(other, []).append((a0, b0, a1, b1))
            crops.append(enlarge(Crop(image[:, cy:cy + size, cx:cx + size], label, inside,
                                      path.name), model_px))
    return crops


def enlarge(crop: Crop, size: int) -> Crop:
    """The crop resampled (bilinear) to ``size`` pixels a side, its boxes with it."""
    if crop.image.shape[-1] == size:
        return crop
    f = size / crop.image.shape[-1]
    image = F.interpolate(torch.from_numpy(crop.image)[None].float(), size=(size, size),
                          mode="bilinear", align_corners=False)[0]
    boxes = {l: [tuple(round(v * f) for v in b) for b in bs] for l, bs in crop.boxes.items()}
    return Crop(image.round().clamp(0, 255).to(torch.uint8).numpy(), crop.label, boxes,
                crop.source)


def hit(point: tuple[int, int], boxes) -> bool:
    x, y = point
    return any(a0 - TOLERANCE <= x <= a1 + TOLERANCE and b0 - TOLERANCE <= y <= b1 + TOLERANCE
               for a0, b0, a1, b1 in boxes)


def predict(model, spec, images: np.ndarray, batch: int = 16, tta: str = "none"):
    """(probabilities [N, C], attention [N, C, S, S] upsampled to the crop), each crop
    predicted as annotate predicts a tile (``tta``: engine/infer/tta.py)."""
    predictor = with_tta(Predictor(model, spec, torch.device("cpu")), tta)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    probs, maps = [], []
    for i in range(0, len(images), batch):
        x = ((images[i:i + batch].astype(np.float32) / 255 - mean) / std).astype(np.float32)
        p, att = predictor(x)
        probs.append(p)
        maps.append(F.interpolate(torch.from_numpy(att), size=x.shape[-2:], mode="bilinear",
                                  align_corners=False).numpy())
    return np.concatenate(probs), np.concatenate(maps)


def assigned_parts(model, spec, images: np.ndarray, batch: int = 16) -> np.ndarray | None:
    """CM-GM: each label's assigned part map M_n [N, C, S, S] (Eq. 1), upsampled to the
    crop; None for other architectures."""
    if not hasattr(model, "rmam"):
        return None
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = (torch.from_numpy(images[i:i + batch]).float() / 255 - mean) / std
            aux = model(x).aux
            maps, choice = aux["maps"], aux["part_choice"]
            picked = maps.gather(1, choice[..., None, None].expand(-1, -1, *maps.shape[-2:]))
            out.append(F.interpolate(picked.float(), size=x.shape[-2:], mode="bilinear",
                                     align_corners=False).numpy())
    return np.concatenate(out)


def pointing(model_dir: Path, crops: list[Crop], rng: np.random.Generator,
             tta: str = "none") -> dict:
    model, spec = load_model(model_dir)
    labels = spec.labels
    images = np.stack([c.image for c in crops])
    probs, maps = predict(model, spec, images, tta=tta)
    parts = assigned_parts(model, spec, images)
    part_hits: dict[str, list[bool]] = {}
    thresholds = np.asarray(spec.label_thresholds())
    mapped = sorted({*NWPU_CLASSES.values(), *DOTA_CLASSES.values()})
    per_label: dict[str, list[tuple[int, int, int, int]]] = {}
    size = crops[0].image.shape[-1]
    for k, crop in enumerate(crops):
        c = labels.index(crop.label)
        peak = np.unravel_index(maps[k, c].argmax(), maps[k, c].shape)[::-1]
        absent = [l for l in mapped if l not in crop.boxes]
        other = labels.index(absent[int(rng.integers(len(absent)))])
        other_peak = np.unravel_index(maps[k, other].argmax(), maps[k, other].shape)[::-1]
        boxes = crop.boxes[crop.label]
        if parts is not None:
            part_peak = np.unravel_index(parts[k, c].argmax(), parts[k, c].shape)[::-1]
            part_hits.setdefault(crop.label, []).append(hit(part_peak, boxes))
        per_label.setdefault(crop.label, []).append((
            hit(peak, boxes), hit((size // 2, size // 2), boxes), hit(other_peak, boxes),
            probs[k, c] >= thresholds[c]))
    rows = {l: np.array(v, float).mean(0) for l, v in per_label.items()}
    every = np.array([x for v in per_label.values() for x in v], float)
    rows["all"] = every.mean(0)
    counts = {l: len(v) for l, v in per_label.items()} | {"all": len(every)}
    part_rows = None
    if parts is not None:
        part_rows = {l: float(np.mean(v)) for l, v in part_hits.items()}
        part_rows["all"] = float(np.mean([x for v in part_hits.values() for x in v]))
    return {"rows": rows, "counts": counts, "parts": part_rows,
            "precision": presence_precision(crops, probs, labels, thresholds, mapped)}


def presence_precision(crops: list[Crop], probs: np.ndarray, labels: list[str],
                       thresholds: np.ndarray, mapped: list[str]) -> dict[str, tuple[float, int]]:
    """label -> (precision, crops predicted present) over all crops (module docstring)."""
    out = {}
    for label in mapped:
        c = labels.index(label)
        said = probs[:, c] >= thresholds[c]
        if said.any():
            boxed = np.array([label in crop.boxes for crop in crops])
            out[label] = (float(boxed[said].mean()), int(said.sum()))
    return out


def ucm_maps(model_dir: Path, n: int = 200) -> dict:
    """Correlation between label maps and present/absent brightness on UC Merced val."""
    model, spec = load_model(model_dir)
    data = open_dataset(f"ucmerced:{SHARED / 'ucmerced-ml'}")
    val = data.split("val")[:n]
    from engine.train.loader import stack_bands

    x = torch.stack([stack_bands(data.read(s), list(data.bands), spec.tile_px) for s in val])
    y = np.stack([s.target for s in val])
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    with torch.inference_mode():
        att = torch.cat([model((x[i:i + 16] - mean) / std).attention for i in
                         range(0, len(x), 16)]).float().numpy()
        parts = (torch.cat([model.rmam(model.features((x[i:i + 16] - mean) / std))[0]
                            for i in range(0, len(x), 16)]).numpy()
                 if hasattr(model, "rmam") else None)  # CM-GM: its part maps too
    bright = att.reshape(*att.shape[:2], -1).mean(-1)
    return {"corr": map_correlation(att), "present": float(bright[y == 1].mean()),
            "absent": float(bright[y == 0].mean()),
            "parts": map_correlation(parts) if parts is not None else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--per-image", type=int, default=3, help="crops per image (default 3)")
    ap.add_argument("--zoom", type=float, default=1.0,
                    help="enlarge crops this many times (default 1: as the imagery comes)")
    ap.add_argument("--tta", default="none", choices=tuple(TTA_VIEWS),
                    help="test-time augmentation of the NWPU and DOTA crops (default none)")
    ap.add_argument("--markdown", type=Path, help="append the tables to this file")
    ap.add_argument("--json", type=Path, help="write the figures to this file, per model "
                    "folder name: {data: {label: {crops, pointing, centre, absent, recall}}, "
                    "precision: {data: {label: {precision, predicted}}}}")
    args = ap.parse_args()
    out, figures = [], {}
    leave_out = trained_nwpu_images(args.models)
    nwpu = nwpu_boxes(SHARED / "nwpu-vhr10", leave_out)
    if leave_out:
        out.append(f"NWPU: {len(nwpu)} images; {len(leave_out)} that a model of this run "
                   "trained on are left out for every model")
        print(out[-1], flush=True)
    for model_dir in args.models:
        spec_px = load_model(model_dir)[1].tile_px
        rng = np.random.default_rng(0)
        sets = {"NWPU": make_crops(nwpu, spec_px, rng,
                                   args.per_image, args.zoom),
                "DOTA": make_crops(dota_boxes(SHARED / "dota-samples"), spec_px, rng, 40,
                                   args.zoom)}
        ucm = ucm_maps(model_dir)
        block = [f"\n### {model_dir.name}" + (f", crops enlarged {args.zoom:g}x"
                                                if args.zoom != 1 else "")
                 + (f", test-time augmentation {args.tta}" if args.tta != "none" else "")
                 + "\n",
                 f"UC Merced val: correlation between label maps {ucm['corr']:.2f}, "
                 f"brightness present {ucm['present']:.3f} / absent {ucm['absent']:.3f}"
                 + (f"; correlation between CM-GM part maps {ucm['parts']:.2f}"
                    if ucm["parts"] is not None else "") + "\n",
                 "| data | label | crops | pointing | centre | absent-label map | "
                 "pointing - absent | presence recall |", "|---|---|---|---|---|---|---|---|"]
        figures[model_dir.name] = {"ucm": ucm}
        parts_line: list[str] = []
        precision_lines: list[str] = []
        for name, crops in sets.items():
            result = pointing(model_dir, crops, np.random.default_rng(1), args.tta)
            figures[model_dir.name][name] = {
                label: {"crops": result["counts"][label], "pointing": float(row[0]),
                        "centre": float(row[1]), "absent": float(row[2]),
                        "recall": float(row[3])} for label, row in result["rows"].items()}
            figures[model_dir.name].setdefault("precision", {})[name] = {
                label: {"precision": value, "predicted": n}
                for label, (value, n) in result["precision"].items()}
            precision_lines.append(f"{name} " + ", ".join(
                f"{l} {v:.2f} ({n})" for l, (v, n) in result["precision"].items()))
            if result["parts"] is not None:
                for label, value in result["parts"].items():
                    figures[model_dir.name][name][label]["part_pointing"] = value
                parts_line.append(f"{name} " + ", ".join(
                    f"{l} {v:.2f}" for l, v in sorted(result["parts"].items(),
                                                      key=lambda r: r[0] == "all")))
            for label, (p, centre, absent, recall) in sorted(result["rows"].items(),
                                                             key=lambda r: r[0] == "all"):
                block.append(f"| {name} | {label} | {result['counts'][label]} | {p:.2f} | "
                             f"{centre:.2f} | {absent:.2f} | {p - absent:+.2f} | {recall:.2f} |")
        block.append("\nPresence precision (crops said present that hold a box of the label; "
                     "how many said present): " + "; ".join(precision_lines))
        if parts_line:
            block.append("\nCM-GM, pointing with each label's assigned part map M_n: "
                         + "; ".join(parts_line))
        print("\n".join(block), flush=True)
        out += block
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n".join(out) + "\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
