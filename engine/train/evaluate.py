"""Evaluating a model directory on a dataset: dataset-level multi-label metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.band_groups import band_groups
from engine.data.datasets import open_dataset
from engine.errors import TileLabelError
from engine.device import resolve_device
from engine.metrics import multilabel_metrics
from engine.models.modelfile import load_model
from engine.models.spec import ModelSpec
from engine.progress import Reporter
from engine.infer.predictor import Predictor
from engine.infer.tta import with_tta
from engine.train.loader import TrainingView, batch_len


HEADLINE = ("mAP_macro", "mAP_micro", "OP", "OR", "OF1", "CP", "CR", "CF1", "F1_macro", "EF1")


def evaluate(model_dir: Path, dataset_spec: str, split: str | None, reporter: Reporter,
             batch_size: int = 32, device: str = "auto", tta: str = "none") -> dict[str, Any]:
    """Metrics of the model on every image of the dataset, or on one split of it, each
    image predicted as annotate predicts a tile (``tta``: engine/infer/tta.py)."""
    scores, targets, spec, overlap = split_scores(model_dir, dataset_spec, split, reporter,
                                                  batch_size, device, tta)
    metrics = multilabel_metrics(scores, targets, np.asarray(spec.label_thresholds()),
                                 spec.labels)
    at_half = multilabel_metrics(scores, targets, np.full(len(spec.labels), 0.5), spec.labels)
    metrics["at_0.5"] = {k: at_half[k] for k in HEADLINE}  # so a gain is never a threshold effect
    metrics["thresholds"] = dict(zip(spec.labels, spec.label_thresholds()))
    metrics.update(model_id=spec.model_id, dataset=dataset_spec, split=split or "all",
                   train_overlap=overlap, tta=tta)
    return metrics


def split_scores(model_dir: Path, dataset_spec: str, split: str | None, reporter: Reporter,
                 batch_size: int = 32, device: str = "auto", tta: str = "none"
                 ) -> tuple[np.ndarray, np.ndarray, ModelSpec, int]:
    """(probabilities [N, C], targets [N, C], the model's spec, how many of the images it
    trained on) on every image of the dataset or on one split of it."""
    model, spec = load_model(model_dir)
    dataset = open_dataset(dataset_spec, bands=spec.bands)
    if not dataset.complete_labels:
        raise TileLabelError(f"{dataset!r} labels only some classes of each tile, and these "
                             "metrics need every label of a tile; measure presence recall on "
                             "it with benchmarks/attention_localisation.py")
    if dataset.labels != spec.labels:
        raise TileLabelError(f"the dataset's labels ({len(dataset.labels)}) are not the "
                             f"model's ({len(spec.labels)}); evaluate on data of the same "
                             "vocabulary")
    samples = dataset.split(split, spec.training.get("split_seed", 0)) if split else dataset.samples
    if not samples:
        raise TileLabelError(f"the {split or 'whole'} split of {dataset!r} is empty")
    seen = set(spec.training.get("train_images", ()))
    overlap = sum(s.name in seen for s in samples)
    if overlap:
        reporter.log(f"{overlap} of the {len(samples)} evaluated images were used to train "
                     f"{spec.model_id}: these figures are optimistic (use --split test)",
                     "warning")
    predictor = with_tta(Predictor(model, spec, resolve_device(device)), tta)
    view = TrainingView([(dataset, s) for s in samples], spec.bands, spec.tile_px, spec.mean,
                        spec.std, train=False, groups=band_groups(spec.arch_config))
    scores, done = [], 0
    for x, _, _ in DataLoader(view, batch_size=batch_size):
        scores.append(predictor(_numpy(x))[0])
        done += batch_len(x)
        reporter.progress("evaluate", done, len(samples))
    return np.concatenate(scores), dataset.targets(samples), spec, overlap


def _numpy(x: torch.Tensor | dict[str, torch.Tensor]) -> np.ndarray | dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy()


def metrics_table(m: dict[str, Any]) -> str:
    """A readable table: the headline figures, then per-class AP/P/R/F1/support."""
    keys = HEADLINE
    tta = "" if m.get("tta", "none") == "none" else f", test-time augmentation {m['tta']}"
    lines = [f"{m['model_id']} on {m['dataset']} ({m['split']}, {m['n_images']} images{tta})",
             "at the model's thresholds: " + "  ".join(f"{k} {m[k]:.3f}" for k in keys),
             "at 0.5 for every label:    " + "  ".join(f"{k} {m['at_0.5'][k]:.3f}"
                                                      for k in keys), "",
             f"{'label':40s} {'AP':>6s} {'P':>6s} {'R':>6s} {'F1':>6s} {'support':>8s}"]
    for label, c in m["per_class"].items():
        ap = "-" if c["AP"] is None else f"{c['AP']:.3f}"
        lines.append(f"{label[:40]:40s} {ap:>6s} {c['P']:6.3f} {c['R']:6.3f} {c['F1']:6.3f} "
                     f"{c['support']:8d}")
    return "\n".join(lines)
