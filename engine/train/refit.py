"""Refitting a trained model on the whole development data (train + validation splits).

A model trained by a recipe on the train split has had its epoch and its per-label
decision thresholds chosen on the validation split. ``tilelabel train --refit MODEL``
trains the same recipe again, from the same starting weights, on the train and
validation splits together: the same schedule, stopped after the epoch the reference
kept, and the reference's thresholds copied, since no held-out data is left to choose
them on. The test split stays out of both runs, so the refit model's test figures are
as unbiased as the reference's and the two compare directly (docs/training.md).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from engine.data.datasets import MultiLabelDataset
from engine.errors import TileLabelError
from engine.models.spec import ModelSpec
from engine.train.loader import Augmentation
from engine.train.trainer import TrainConfig

# What the command line may change in a refit; the rest (data, split, architecture,
# schedule, augmentation) is the reference's recipe, or it would not be a refit of it.
MAY_CHANGE = ("seed", "device", "workers", "amp", "model_id")


@dataclass(frozen=True)
class DevRefit:
    """How a refit run differs from its reference's: trained on the train and validation
    splits, stopped after (and keeping) the reference's kept epoch, with its thresholds."""

    reference_id: str
    keep_epoch: int                   # 1-based, as the reference's card says "kept epoch N"
    thresholds: list[float] | None    # None: the architecture's own rule (0.5)
    reference_val: dict[str, Any]     # the reference's validation figures, for the record

    def record(self) -> dict[str, Any]:
        return {"of": self.reference_id, "fit_on": "train+val", "kept_epoch": self.keep_epoch,
                "reference_val": self.reference_val}


def reference_config(reference: ModelSpec) -> TrainConfig:
    """The TrainConfig the reference model was trained with (as model.json records it)."""
    training = reference.training or {}
    recorded = training.get("config")
    if not recorded or "best_epoch" not in training:
        raise TileLabelError(f"model {reference.model_id} records no training run (no "
                             "'training.config' in its model.json), so there is no recipe to "
                             "refit; give a model that `tilelabel train` wrote")
    if "refit" in training:
        raise TileLabelError(f"model {reference.model_id} is itself a refit of "
                             f"{training['refit']['of']}; refit the model it was made from")
    if reference.parent:
        raise TileLabelError(f"model {reference.model_id} was fine-tuned from "
                             f"{reference.parent}; only a model trained from its backbone "
                             "can be refitted")
    known = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in recorded.items() if k in known}
    augment = {k: v for k, v in (config.get("augment") or {}).items()
               if k in {f.name for f in fields(Augmentation)}}
    if "scale" in augment:
        augment["scale"] = tuple(augment["scale"])
    config["augment"] = Augmentation(**augment)
    return TrainConfig(**config)


def refit_plan(reference: ModelSpec, overrides: dict[str, Any]) -> tuple[TrainConfig, DevRefit]:
    """The reference's config with the command line's values on top (MAY_CHANGE: seed,
    device, ...), and the refit: its kept epoch and thresholds. Any other flag is refused."""
    overrides = {k: v for k, v in overrides.items() if v not in (None, {})}
    given = sorted(k for k in overrides if k not in MAY_CHANGE)
    if given:
        raise TileLabelError(f"--refit takes {', '.join(k.replace('_', '-') for k in given)} "
                             f"from the reference model {reference.model_id}; leave them out "
                             f"(a refit may change only {', '.join(MAY_CHANGE)})")
    cfg = reference_config(reference)
    model_id = overrides.pop("model_id", None) or f"{reference.model_id}-dev"
    cfg = replace(cfg, **overrides, model_id=model_id)
    refit = DevRefit(reference.model_id, reference.training["best_epoch"] + 1,
                     list(reference.thresholds) if reference.thresholds else None,
                     dict(reference.metrics.get("val", {})))
    return cfg, refit


def check_same_data(reference: ModelSpec, datasets: list[MultiLabelDataset]) -> None:
    """The refit must train on the reference's data: the same labels, and every image the
    reference trained on in the train split it sees now (the split is the same)."""
    first = datasets[0]
    if first.labels != reference.labels:
        raise TileLabelError(f"the data's labels ({len(first.labels)}, e.g. "
                             f"{first.labels[0]!r}) are not those of the reference model "
                             f"{reference.model_id}; refit it on the data it was trained on")
    seed = reference.training.get("split_seed", 0)
    now = {s.name for d in datasets for s in d.split("train", seed)}
    missing = sorted(set(reference.training.get("train_images", [])) - now)
    if missing:
        raise TileLabelError(f"{len(missing)} image(s) the reference model "
                             f"{reference.model_id} trained on are not in the train split of "
                             f"this data (e.g. {missing[0]}); refit it on the data it was "
                             "trained on")
