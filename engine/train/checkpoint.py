"""Training checkpoints without pickles: one ``state.safetensors`` file.

Its tensors are the model weights (``model.*``), the best weights so far (``best.*``), the
running weight average when the run keeps one (``average.*``,
engine.train.weight_average) and the optimizer's per-parameter state
(``optim.<index>.<name>``); its metadata holds, as JSON, the epoch, the optimizer's
parameter groups, the early-stopping state and the history. Weights and the epoch they
belong to live in one file, replaced by one rename, so a stop at any moment leaves the
previous checkpoint or the new one, never the weights of one epoch with the state of
another. (Checkpoints written before 2026-12-07 kept the JSON beside, in ``state.json``;
they are still read.) Augmentation and shuffling are seeded from (seed, epoch), so
resuming from a checkpoint continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import TileLabelError

TENSORS = "state.safetensors"
STATE_KEY = "tilelabel.state"  # the metadata entry holding the JSON state
LEGACY_STATE = "state.json"    # where checkpoints before 2026-12-07 kept it


def save_checkpoint(folder: Path, model: torch.nn.Module, best: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    average: dict[str, torch.Tensor] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
    tensors.update({f"average.{k}": v.detach().cpu().contiguous()
                    for k, v in (average or {}).items()})
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    doc = {**state, "param_groups": opt["param_groups"]}
    tmp = folder / (TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={STATE_KEY: json.dumps(doc, default=float)})
    os.replace(tmp, folder / TENSORS)  # the one step that moves the checkpoint on
    (folder / LEGACY_STATE).unlink(missing_ok=True)  # an older run's, now out of date


def load_checkpoint(folder: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Restore model and optimizer; returns (state, best weights, weight average: empty
    when the run keeps none)."""
    if not (folder / TENSORS).is_file():
        raise TileLabelError(f"no checkpoint to resume in {folder}")
    try:
        tensors, text = _read(folder)
        state = json.loads(text)
        if not isinstance(state, dict) or "param_groups" not in state:
            raise ValueError("its state lacks the optimizer's parameter groups")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TileLabelError(f"the checkpoint in {folder} is damaged ({exc}); start over "
                             "with --overwrite instead of --resume") from exc
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    average = {k[8:]: v for k, v in tensors.items() if k.startswith("average.")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    return state, best, average


def _read(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's tensors and its JSON state: in the tensors file's metadata, or
    beside it in a checkpoint written before 2026-12-07."""
    with safe_open(str(folder / TENSORS), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        text = (f.metadata() or {}).get(STATE_KEY)
    if text is None:
        legacy = folder / LEGACY_STATE
        if not legacy.is_file():
            raise ValueError("it holds no training state")
        text = legacy.read_text()
    return tensors, text
