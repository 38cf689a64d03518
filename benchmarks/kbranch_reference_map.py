"""K-Branch's patch attention against a pixel-level CORINE reference map.

../shared/data/bigearthnet-v2-extra/reference_maps holds the CORINE Land Cover map of one
BigEarthNet v2 patch (``..._T33UUP_26_57``, 120 x 120 px at 10 m, CLC level-3 codes);
the patch's Sentinel-2 bands are in ../shared/data/bigearthnet-v2-lmdb. This script
trains K-Branch as benchmarks/kbranch_bigearthnet.py does (the tiny real sample), runs it
on that patch, and compares, on the model's 4 x 4 patch grid (30 px = 300 m cells of the
10 m group), each label's patch attention with the share of the cell that the reference
map gives to that label (CLC codes mapped to the 19-class nomenclature):
- per label in the reference map: Pearson correlation between attention and cover over
  the 16 cells, whether the cell of highest attention is one the label covers, and the
  chance of that for a random cell (the share of cells the label covers at all);
- the model's probability for each label.

What one patch can show: whether the attention of a label present in the patch sits on
its cover, cell by cell. What it cannot: a figure with any statistical weight (16 cells,
one image, a model trained on 9 patches), or anything about labels absent from the patch.

Usage: python benchmarks/kbranch_reference_map.py [--epochs N] [--model DIR] [--data DIR]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch

from engine.band_groups import band_groups
from engine.data.bigearthnet_labels import LABELS_43, OLD_TO_NEW
from engine.data.datasets import open_dataset
from engine.models.modelfile import load_model
from engine.train.loader import TrainingView

from kbranch_bigearthnet import SHARED, train

PATCH = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"
# CORINE level-3 codes in the order of LABELS_43 (335 glaciers is not among the 43)
CLC_CODES = [111, 112, 121, 122, 123, 124, 131, 132, 133, 141, 142, 211, 212, 213, 221, 222,
             223, 231, 241, 242, 243, 244, 311, 312, 313, 321, 322, 323, 324, 331, 332, 333,
             334, 411, 412, 421, 422, 423, 511, 512, 521, 522, 523]
CODE_TO_19 = {code: OLD_TO_NEW.get(name) for code, name in zip(CLC_CODES, LABELS_43)}


def cover_per_cell(reference: np.ndarray, labels: list[str], grid: int) -> np.ndarray:
    """[C, grid, grid]: the share of each cell that the reference map gives each label."""
    side = reference.shape[0] // grid
    cover = np.zeros((len(labels), grid, grid))
    for code in np.unique(reference):
        label = CODE_TO_19.get(int(code))
        if label is None or label not in labels:
            continue
        hit = (reference == code).reshape(grid, side, grid, side).mean((1, 3))
        cover[labels.index(label)] += hit
    return cover


def patch_attention(model_dir: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray, str, list]:
    """The model's label attention [C, grid, grid] and probabilities on the patch."""
    model, spec = load_model(model_dir)
    ds = open_dataset(f"bigearthnet-v2:{data_dir / 'bigearthnet-v2-lmdb'}")
    sample = next(s for s in ds.samples if s.name == PATCH)
    view = TrainingView([(ds, sample)], spec.bands, spec.tile_px, spec.mean, spec.std,
                        False, groups=band_groups(spec.arch_config))
    x = {k: v[None] for k, v in view[0][0].items()}
    with torch.inference_mode():
        out = model.eval()(x)
    probs = torch.sigmoid(out.logits[0]).numpy()
    return out.attention[0].numpy(), probs, sample.source, spec.labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--model", type=Path, help="a trained K-Branch model (default: train one)")
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    args = ap.parse_args()
    model_dir = args.model
    if model_dir is None:
        model_dir = Path(tempfile.mkdtemp(prefix="kbranch-ref-")) / "kbranch"
        train(args.data, model_dir, args.epochs)
    reference_file = (args.data / "bigearthnet-v2-extra" / "reference_maps"
                      / f"{PATCH}_reference_map.tif")
    with rasterio.open(reference_file) as src:
        reference = src.read(1)
    attention, probs, split, labels = patch_attention(model_dir, args.data)
    grid = attention.shape[-1]
    cover = cover_per_cell(reference, labels, grid)
    print(f"patch {PATCH} (split: {split}); CLC codes "
          f"{dict(zip(*np.unique(reference, return_counts=True)))}; grid {grid} x {grid}")
    print("| label | cover of the patch | cells covered | probability | attention "
          "max / mean | corr. attention-cover | peak on cover | chance |")
    print("|---|---|---|---|---|---|---|---|")
    for c in np.flatnonzero(cover.sum((1, 2)) > 0):
        a, v = attention[c].ravel(), cover[c].ravel()
        corr = float(np.corrcoef(a, v)[0, 1]) if a.std() > 1e-9 and v.std() > 1e-9 else float("nan")
        covered = float((v > 0).mean())
        print(f"| {labels[c]} | {v.mean():.2f} | {int((v > 0).sum())}/{v.size} | "
              f"{probs[c]:.2f} | {a.max():.3f} / {a.mean():.3f} | {corr:+.2f} | "
              f"{'yes' if v[a.argmax()] > 0 else 'no'} | {covered:.2f} |")
    absent = [c for c in range(len(labels)) if cover[c].sum() == 0]
    print(f"labels absent from the reference map: mean probability "
          f"{probs[absent].mean():.2f}, mean attention {attention[absent].mean():.3f}")


if __name__ == "__main__":
    main()
