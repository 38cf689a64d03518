"""How high can UC Merced's test figures go? An ensemble of trained models, and its errors.

The accuracy issue asks the default for test OF1 >= 0.92, CF1 >= 0.94, mAP >= 0.975. This
benchmark asks what several trained models together reach on the same split: it averages
their probabilities (scored once, cached by benchmarks/score_cache.py), chooses thresholds
on the validation split by the trainer's rule (engine.metrics.calibrate_thresholds) and
scores the test split, beside each model alone by the same rule. It then counts the
ensemble's test errors per label and lists the confident ones (p >= 0.8 on a label the
annotation lacks, p <= 0.2 on one it has), and with --sheet draws those images with their
captions, so that a person can judge which of them are the annotation's and which the
models'.

Usage: python benchmarks/ensemble_ceiling.py MODEL_DIR [MODEL_DIR ...]
       [--dataset ucmerced:../shared/data/ucmerced-ml] [--sheet out/ceiling.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from engine.data.datasets import open_dataset
from engine.metrics import calibrate_thresholds, multilabel_metrics
from engine.models.spec import read_spec
from score_cache import UCM, split_scores

CONFIDENT = 0.8        # an ensemble probability this far from the annotation is "confident"
FIGURES = ("OF1", "CF1", "mAP_macro", "EF1")


def figures(val: np.ndarray, val_t: np.ndarray, test: np.ndarray, test_t: np.ndarray
            ) -> tuple[dict, np.ndarray]:
    """Test metrics at thresholds chosen on validation by the trainer's rule."""
    thresholds = np.asarray(calibrate_thresholds(val, val_t))
    return multilabel_metrics(test, test_t, thresholds), thresholds


def row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in FIGURES) + " |"


def confident_errors(test: np.ndarray, test_t: np.ndarray, labels: list[str]
                     ) -> list[tuple[int, str, str, float]]:
    """(image index, label, FP or FN, probability) where the ensemble is sure and wrong."""
    found = []
    for i, c in zip(*np.nonzero((test >= CONFIDENT) & (test_t == 0))):
        found.append((int(i), labels[c], "FP", float(test[i, c])))
    for i, c in zip(*np.nonzero((test <= 1 - CONFIDENT) & (test_t == 1))):
        found.append((int(i), labels[c], "FN", float(test[i, c])))
    return sorted(found)


def common_split_seed(models: list[Path]) -> int:
    """The split seed every model was trained with: averaging models of different splits
    would mix their test images."""
    seeds = {read_spec(m).training.get("split_seed", 0) for m in models}
    if len(seeds) > 1:
        sys.exit(f"the models were trained on different splits (split seeds {sorted(seeds)})")
    return seeds.pop()


def draw_sheet(errors: list, sources: list[str], names: list[str], path: Path) -> None:
    """The confidently wrong images, five a row, each captioned 'name FP|FN label p'."""
    from PIL import Image, ImageDraw

    cols, cell, caption = 5, 256, 20
    rows = (len(errors) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (cell + 4), rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (i, label, kind, p) in enumerate(errors):
        x, y = (k % cols) * (cell + 4), (k // cols) * (cell + caption)
        sheet.paste(Image.open(sources[i]).convert("RGB").resize((cell, cell)), (x, y))
        draw.text((x, y + cell + 3), f"{names[i]} {kind} {label} p={p:.2f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--dataset", default=UCM)
    ap.add_argument("--sheet", type=Path, help="write the confidently wrong test images here")
    args = ap.parse_args()
    scored = {m.name: (split_scores(m, args.dataset, "val") + split_scores(m, args.dataset, "test"))
              for m in args.models}
    print("| test split, thresholds by the trainer's rule | " + " | ".join(FIGURES)
          + " |\n|---|" + "---|" * len(FIGURES))
    for name, (val, val_t, test, test_t) in scored.items():
        print(row(name, figures(val, val_t, test, test_t)[0]))
    val = np.mean([s[0] for s in scored.values()], 0)
    test = np.mean([s[2] for s in scored.values()], 0)
    val_t, test_t = next(iter(scored.values()))[1::2]
    ens, thresholds = figures(val, val_t, test, test_t)
    print(row(f"**mean of the {len(scored)}**", ens))

    dataset = open_dataset(args.dataset)
    split_seed = common_split_seed(args.models)
    pred = test >= thresholds
    fp, fn = pred & (test_t == 0), ~pred & (test_t == 1)
    print(f"\nThe ensemble's test errors: {int(fp.sum())} false, {int(fn.sum())} missed labels "
          f"of {int(test_t.sum())} annotated")
    for c in np.argsort(-(fp.sum(0) + fn.sum(0))):
        if fp[:, c].sum() + fn[:, c].sum():
            print(f"  {dataset.labels[c]:12s} {int(test_t[:, c].sum()):4d} annotated, "
                  f"{int(fp[:, c].sum()):3d} false, {int(fn[:, c].sum()):3d} missed")
    samples = dataset.split("test", split_seed)
    names = [s.name for s in samples]
    errors = confident_errors(test, test_t, dataset.labels)
    print(f"\nConfidently wrong (p >= {CONFIDENT} absent or <= {1 - CONFIDENT:.1f} present): "
          f"{len(errors)}")
    for i, label, kind, p in errors:
        annotated = [dataset.labels[c] for c in np.flatnonzero(test_t[i])]
        print(f"  {names[i]:22s} {kind} {label:12s} p={p:.2f}  annotated: {', '.join(annotated)}")
    if args.sheet:
        draw_sheet(errors, [str(s.source) for s in samples], names, args.sheet)
        print(f"\nwrote {args.sheet}")


if __name__ == "__main__":
    main()
