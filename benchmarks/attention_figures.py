"""Look at a model's overlays on real boxes: NWPU VHR-10 / DOTA crops of the localisation
benchmark (benchmarks/attention_localisation.py), one row per crop: the image with its
boxes, the map of the crop's label, and the map of a label absent from it, each on the
fixed [0, 1] scale the plugin draws (no per-map stretching), with the label's probability.

The crops are the benchmark's (same seed); NWPU is research-use data, so the figure goes
to out/ (not the repo) unless --out says otherwise.

Usage: python benchmarks/attention_figures.py MODEL_DIR [--per-label 2]
       [--out out/attention_figures.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attention_localisation import (DOTA_CLASSES, NWPU_CLASSES, SHARED, Crop,  # noqa: E402
                                    dota_boxes, make_crops, nwpu_boxes, predict,
                                    trained_nwpu_images)
from engine.models.modelfile import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pick(crops: list[Crop], per_label: int) -> list[Crop]:
    """The first ``per_label`` crops of each mapped label, in the benchmark's order."""
    chosen: dict[str, list[Crop]] = {}
    for crop in crops:
        if len(chosen.setdefault(crop.label, [])) < per_label:
            chosen[crop.label].append(crop)
    return [c for label in sorted(chosen) for c in chosen[label]]


def draw(ax, image: np.ndarray, overlay: np.ndarray | None, boxes, title: str) -> None:
    ax.imshow(image.transpose(1, 2, 0))
    if overlay is not None:
        ax.imshow(overlay, cmap="inferno", vmin=0, vmax=1, alpha=0.6)
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1))
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--per-label", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "attention_figures.png")
    args = ap.parse_args()
    model, spec = load_model(args.model)
    rng = np.random.default_rng(0)
    held_out = nwpu_boxes(SHARED / "nwpu-vhr10", trained_nwpu_images([args.model]))
    crops = make_crops(held_out, spec.tile_px, rng, 3)
    crops += make_crops(dota_boxes(SHARED / "dota-samples"), spec.tile_px, rng, 40)
    crops = pick(crops, args.per_label)
    probs, maps = predict(model, spec, np.stack([c.image for c in crops]))
    mapped = sorted({*NWPU_CLASSES.values(), *DOTA_CLASSES.values()})
    fig, axes = plt.subplots(len(crops), 3, figsize=(6, 2 * len(crops)), squeeze=False)
    for row, (crop, p, m) in enumerate(zip(crops, probs, maps)):
        c = spec.labels.index(crop.label)
        other = spec.labels.index([l for l in mapped if l not in crop.boxes][row % 3])
        boxes = crop.boxes[crop.label]
        draw(axes[row, 0], crop.image, None, boxes, f"{crop.source}: {crop.label}")
        draw(axes[row, 1], crop.image, m[c], boxes, f"{crop.label} p={p[c]:.2f}")
        draw(axes[row, 2], crop.image, m[other], boxes, f"{spec.labels[other]} (absent) "
                                                         f"p={p[other]:.2f}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"{len(crops)} crops drawn to {args.out}")


if __name__ == "__main__":
    main()
