"""Fine-tuned models by recipe, over seeds: UC Merced test figures and NWPU attention
figures per seed, and their mean with half the range.

Each RUN is ``RECIPE[:VARIANT]`` (a file of recipes/, e.g. ``gap-linear`` or
``cmgm:N-LSTM``). For every run and seed the model is trained with ``tilelabel train
--recipe recipes/RECIPE.toml [--variant VARIANT] --seed SEED`` into
``--out/RECIPE[-VARIANT]-sSEED``, unless a trained model is already there (``--retrain``
trains it again). ``--seed`` varies the weights, the shuffling and the augmentation, never
the split (split seed 0), so every row is scored on the same 252 test images. Figures:
OF1, CF1, mAP, EF1 at the model's calibrated thresholds (``tilelabel evaluate``), and the
pointing game on NWPU VHR-10 crops (benchmarks/attention_localisation.py): pointing,
pointing minus the absent-label map, presence recall per label.

Training one run takes 30-60 minutes on a 2-core CPU (docs/benchmarks.md); a table of
three runs by three seeds is most of a working day there.

Usage: python benchmarks/recipe_seeds.py RUN [RUN ...] [--seeds 0 1 2] [--out DIR]
       [--dataset DIR] [--retrain]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from attention_localisation import (SHARED, make_crops, nwpu_boxes, pointing,
                                    trained_nwpu_images)

from engine.models.modelfile import load_model
from engine.progress import Reporter
from engine.train.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
RECALL_LABELS = ("airplane", "tanks", "court", "cars", "ship")
COLUMNS = ("OF1", "CF1", "mAP", "EF1", "pointing", "- absent") + RECALL_LABELS


def trained(run: str, seed: int, out: Path, dataset: Path, retrain: bool) -> Path:
    """The model of ``run`` at ``seed``, trained now if it is not there yet."""
    recipe, _, variant = run.partition(":")
    model_dir = out / f"{recipe}{'-' + variant if variant else ''}-s{seed}"
    if (model_dir / "model.json").exists() and not retrain:
        return model_dir
    cmd = [sys.executable, "-m", "engine.cli", "train", "--recipe",
           str(ROOT / "recipes" / f"{recipe}.toml"), "--dataset", f"ucmerced:{dataset}",
           "--out", str(model_dir), "--seed", str(seed), "--overwrite"]
    if variant:
        cmd += ["--variant", variant]
    print(f"training {model_dir.name}: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return model_dir


def figures(model_dir: Path, dataset: Path) -> dict[str, float]:
    """Test-split accuracy and NWPU attention figures of one trained model."""
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    m = evaluate(model_dir, f"ucmerced:{dataset}", "test", quiet)
    tile_px = load_model(model_dir)[1].tile_px
    held_out = nwpu_boxes(SHARED / "nwpu-vhr10", trained_nwpu_images([model_dir]))
    crops = make_crops(held_out, tile_px, np.random.default_rng(0), 3, 1.0)
    rows = pointing(model_dir, crops, np.random.default_rng(1))["rows"]
    hit, _, absent, _ = rows["all"]
    return {"OF1": m["OF1"], "CF1": m["CF1"], "mAP": m["mAP_macro"], "EF1": m["EF1"],
            "pointing": hit, "- absent": hit - absent,
            **{label: rows[label][3] for label in RECALL_LABELS if label in rows}}


def table(run: str, per_seed: dict[int, dict[str, float]]) -> list[str]:
    """Markdown rows: one per seed, then the mean with half the range in brackets."""
    lines = []
    for seed, f in per_seed.items():
        lines.append(f"| {run} | {seed} | " + " | ".join(f"{f[k]:.3f}" for k in COLUMNS) + " |")
    values = {k: np.array([f[k] for f in per_seed.values()]) for k in COLUMNS}
    lines.append(f"| {run} | mean (half range) | " + " | ".join(
        f"{v.mean():.3f} ({(v.max() - v.min()) / 2:.3f})" for v in values.values()) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="RECIPE or RECIPE:VARIANT, e.g. default cmgm:N-LSTM")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "seeds")
    ap.add_argument("--dataset", type=Path, default=SHARED / "ucmerced-ml")
    ap.add_argument("--retrain", action="store_true", help="train again what is already there")
    args = ap.parse_args()
    for run in args.runs:
        if not (ROOT / "recipes" / f"{run.partition(':')[0]}.toml").exists():
            print(f"no recipe recipes/{run.partition(':')[0]}.toml: name a file of recipes/ "
                  "without .toml", file=sys.stderr)
            sys.exit(2)
    print("| run | seed | test OF1 | CF1 | mAP | EF1 | NWPU pointing | - absent | recall "
          + " | ".join(RECALL_LABELS) + " |\n|" + "---|" * (len(COLUMNS) + 2), flush=True)
    for run in args.runs:
        per_seed = {s: figures(trained(run, s, args.out, args.dataset, args.retrain),
                               args.dataset) for s in args.seeds}
        print("\n".join(table(run, per_seed)), flush=True)


if __name__ == "__main__":
    main()
