"""The one output type every model returns (DESIGN.md, "The engine's contract")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ModelOutput:
    """What a model's forward pass returns.

    logits: [B, C] raw scores, one per label (sigmoid gives probabilities).
    attention: [B, C, h, w] per-label attention in [0, 1], or None for models without it;
        the plugin draws it as one overlay per label.
    aux: whatever the model's own training losses need (empty for plain models).
    """

    logits: torch.Tensor
    attention: torch.Tensor | None = None
    aux: dict[str, Any] = field(default_factory=dict)
