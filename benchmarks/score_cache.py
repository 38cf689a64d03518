"""A model's probabilities on one split of a dataset, scored once and cached.

Benchmarks that compare threshold rules or combine models re-read the same scores many
times; scoring a split takes a minute per model on the CPU. The cache lives under
out/threshold_scores/, keyed by the model folder's name and the split: delete a file
there after re-training a model of the same name.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "threshold_scores"
UCM = f"ucmerced:{ROOT.parent / 'shared' / 'data' / 'ucmerced-ml'}"


def split_scores(model_dir: Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, targets) of one split, cached by model folder and split."""
    from engine.train.evaluate import split_scores as predict

    cache = CACHE / f"{model_dir.name}-{split}.npz"
    if cache.exists():
        found = np.load(cache)
        return found["scores"], found["targets"]
    quiet = Reporter(json_lines=True, stream=io.StringIO())
    scores, targets, _, _ = predict(model_dir, dataset, split, quiet)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, scores=scores, targets=targets)
    return scores, targets
