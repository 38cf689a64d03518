"""Which rule for per-label decision thresholds carries over from validation to test?

Training calibrates each label's threshold on the validation split (engine.metrics,
``calibrate_thresholds``). Until 2026-12-06 that was the F1-maximising value on a grid of
0.025 steps; with 252 validation images a label has 12-165 positives, so the F1-best
value is partly noise, and this benchmark chose the rule that replaced it. This benchmark
scores each model's validation and test splits once (cached under out/threshold_scores/),
then sets thresholds on validation by several rules and reports OF1 / CF1 for each, per
model and on the mean: within the validation split by two-fold halvings (which chooses a
rule without looking at the test split) and on the test split.

Rules: 0.5 for every label; F1-best; F1-best of the F1 curve smoothed over neighbouring
grid values; halfway between F1-best and 0.5 (the trainer's rule of 2026-12-06); one
threshold for every label (the best validation OF1: the model's common threshold); halfway
between F1-best and the common threshold (the trainer's rule since 2026-12-07: under the
asymmetric loss the common threshold is far above 0.5).

Usage: python benchmarks/threshold_rules.py MODEL_DIR [MODEL_DIR ...]
       [--dataset ucmerced:../shared/data/ucmerced-ml]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np

from engine.metrics import (MIN_POSITIVES, THRESHOLD_GRID, best_on_grid, calibrate_thresholds,
                            common_threshold, multilabel_metrics)
from score_cache import UCM, split_scores


def f1_curves(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[C, T] each label's F1 at each grid threshold."""
    pred = scores.T[:, None, :] >= THRESHOLD_GRID[None, :, None]          # [C, T, N]
    pos = targets.T.astype(bool)[:, None, :]
    tp = (pred & pos).sum(-1)
    return 2 * tp / np.maximum(pred.sum(-1) + pos.sum(-1), 1)


def smoothed(scores: np.ndarray, targets: np.ndarray) -> list[float]:
    curves = f1_curves(scores, targets)
    kernel = np.ones(3) / 3
    out = []
    for c, curve in enumerate(curves):
        if targets[:, c].sum() < MIN_POSITIVES:
            out.append(0.5)
            continue
        out.append(best_on_grid(np.convolve(np.pad(curve, 1, mode="edge"), kernel, mode="valid")))
    return out


def f1_best(scores: np.ndarray, targets: np.ndarray) -> list[float]:
    return calibrate_thresholds(scores, targets, shrink=0.0)


def halfway_to_half(scores: np.ndarray, targets: np.ndarray) -> list[float]:
    return calibrate_thresholds(scores, targets, shrink=0.5, towards=0.5)


def one_for_all(scores: np.ndarray, targets: np.ndarray) -> list[float]:
    return [common_threshold(scores, targets)] * scores.shape[1]


def halfway_to_common(scores: np.ndarray, targets: np.ndarray) -> list[float]:
    return calibrate_thresholds(scores, targets, shrink=0.5)


RULES: dict[str, Callable[[np.ndarray, np.ndarray], list[float]]] = {
    "0.5": lambda s, t: [0.5] * s.shape[1],
    "F1-best (the trainer's rule until 2026-12-06)": f1_best,
    "F1-best, smoothed": smoothed,
    "halfway to 0.5 (the trainer's rule 2026-12-06)": halfway_to_half,
    "one for all labels": one_for_all,
    "halfway to the common threshold (the trainer's rule since 2026-12-07)": halfway_to_common,
}


def two_fold(val: np.ndarray, val_t: np.ndarray, choose, repeats: int = 20) -> tuple[float, float]:
    """Mean OF1 / CF1 over random halvings of the validation split: thresholds chosen on
    one half, scored on the other (both ways). Chooses a rule without the test split."""
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(repeats):
        order = rng.permutation(len(val))
        for a, b in ((order[::2], order[1::2]), (order[1::2], order[::2])):
            m = multilabel_metrics(val[b], val_t[b], np.asarray(choose(val[a], val_t[a])))
            scores.append((m["OF1"], m["CF1"]))
    return tuple(np.mean(scores, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--dataset", default=UCM)
    args = ap.parse_args()
    test_table = {rule: [] for rule in RULES}
    fold_table = {rule: [] for rule in RULES}
    header = "| model | " + " | ".join(f"{r} OF1 / CF1" for r in RULES) + " |"
    lines = {"test": [], "fold": []}
    for model_dir in args.models:
        val, val_t = split_scores(model_dir, args.dataset, "val")
        test, test_t = split_scores(model_dir, args.dataset, "test")
        for rule, choose in RULES.items():
            m = multilabel_metrics(test, test_t, np.asarray(choose(val, val_t)))
            test_table[rule].append((m["OF1"], m["CF1"]))
            fold_table[rule].append(two_fold(val, val_t, choose))
        for name, table in (("test", test_table), ("fold", fold_table)):
            lines[name].append(f"| {model_dir.name} | " + " | ".join(
                f"{v[-1][0]:.3f} / {v[-1][1]:.3f}" for v in table.values()) + " |")
        print(f"scored {model_dir.name}", flush=True)
    for name, table, title in (
            ("fold", fold_table, "Validation split, two-fold (thresholds chosen on one random "
                                 "half, scored on the other; 20 halvings)"),
            ("test", test_table, "Test split (thresholds chosen on the whole validation split)")):
        print(f"\n{title}:\n\n{header}\n|---|" + "---|" * len(RULES))
        print("\n".join(lines[name]))
        means = [np.mean(v, 0) for v in table.values()]
        print(f"| mean of {len(args.models)} | "
              + " | ".join(f"{o:.3f} / {c:.3f}" for o, c in means) + " |")


if __name__ == "__main__":
    main()
