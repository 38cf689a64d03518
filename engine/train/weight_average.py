"""An exponential moving average of a model's weights (Polyak averaging, as timm's ModelEma).

After every optimiser step the average moves towards the live weights:
``avg = d * avg + (1 - d) * w``, with ``d = min(decay, (1 + n) / (10 + n))`` after n
updates, so the first steps of a run (or a stage) are not held back by the random start.
Floating-point parameters and buffers (batch-norm statistics) are averaged; integer
buffers are copied. The trainer validates, keeps and calibrates the averaged weights, so
the model a run writes is the average, not the last step's weights.

Training in stages (CM-GM) or re-initialising layers from data (``prepare_from_data``)
changes what the weights mean: the trainer calls ``restart`` there, so an average never
mixes weights of two stages.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from engine.errors import TileLabelError


class WeightAverage:
    """The running average of one model's state dict (on the model's device)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise TileLabelError(f"weight_average must be between 0 and 1 (e.g. 0.998), "
                                 f"got {decay}; use 0 to train without it")
        self.decay = decay
        self.updates = 0
        self.weights: dict[str, torch.Tensor] = {}
        self.restart(model)

    def restart(self, model: nn.Module) -> None:
        """Start the average afresh from the model's current weights."""
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for key, value in model.state_dict().items():
            avg = self.weights[key]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach().to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights inside the block, its own weights after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.weights)
        try:
            yield model
        finally:
            model.load_state_dict(live)

    def restore(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Continue an average a checkpoint saved (``weights`` as ``self.weights`` was)."""
        missing = sorted(set(self.weights) - set(weights))
        if missing:
            raise TileLabelError(f"the checkpoint's weight average lacks {missing[0]}; start "
                                 "over with --overwrite instead of --resume")
        device = next(iter(self.weights.values())).device if self.weights else "cpu"
        self.weights = {k: weights[k].to(device) for k in self.weights}
        self.updates = updates
