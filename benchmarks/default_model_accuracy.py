"""Accuracy of the shipped default model on the UC Merced dev data (val and test splits).

Target (issue: default model): OF1 and CF1 at least 0.80 on the validation split; the
CM-GM paper's ResNet-50 baseline reaches 79.5 MiF1 (OF1) / 80.4 MaF1 (CF1).

Usage: python benchmarks/default_model_accuracy.py [--dataset DIR]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.infer.annotate import DEFAULT_MODEL
from engine.progress import Reporter
from engine.train.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucmerced-ml"
TARGET = 0.80


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=UCM)
    args = ap.parse_args()
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    keys = ("OF1", "CF1", "mAP_macro", "OP", "OR", "CP", "CR", "EF1")
    print(f"{'split':6s} " + " ".join(f"{k:>9s}" for k in keys) + "  images")
    for split in ("val", "test"):
        m = evaluate(DEFAULT_MODEL, f"ucmerced:{args.dataset}", split, quiet)
        print(f"{split:6s} " + " ".join(f"{m[k]:9.3f}" for k in keys) + f"  {m['n_images']}")
        if split == "val":
            ok = m["OF1"] >= TARGET and m["CF1"] >= TARGET
            verdict = f"target OF1, CF1 >= {TARGET} on val: {'met' if ok else 'NOT met'}"
    print(verdict)


if __name__ == "__main__":
    main()
