"""Training checkpoints without pickles: ``state.safetensors`` + ``state.json``.

The tensors file holds the model weights (``model.*``), the best weights so far
(``best.*``), the running weight average when the run keeps one (``average.*``,
engine.train.weight_average) and the optimizer's per-parameter state
(``optim.<index>.<name>``); the JSON
holds the epoch, the optimizer's parameter groups, the early-stopping state and the
history. Augmentation and shuffling are seeded from (seed, epoch), so resuming from a
checkpoint continues exactly as an uninterrupted run would.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import TileLabelError

TENSORS, STATE = "state.safetensors", "state.json"


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
    tmp_t, tmp_s = folder / (TENSORS + ".tmp"), folder / (STATE + ".tmp")
    save_file(tensors, str(tmp_t))
    tmp_s.write_text(json.dumps(doc, indent=1, default=float))
    os.replace(tmp_t, folder / TENSORS)   # tensors first: a state.json always has its tensors
    os.replace(tmp_s, folder / STATE)


def load_checkpoint(folder: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Restore model and optimizer; returns (state, best weights, weight average: empty
    when the run keeps none)."""
    if not (folder / STATE).is_file() or not (folder / TENSORS).is_file():
        raise TileLabelError(f"no checkpoint to resume in {folder}")
    try:
        tensors = load_file(str(folder / TENSORS))
        state = json.loads((folder / STATE).read_text())
        if not isinstance(state, dict) or "param_groups" not in state:
            raise ValueError("state.json lacks the optimizer's parameter groups")
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
