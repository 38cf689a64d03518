"""Choosing the torch device for a job: shared by training, evaluation and inference."""
from __future__ import annotations

import torch

from engine.errors import TileLabelError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TileLabelError("--device cuda was asked for but no CUDA GPU is visible to "
                             "PyTorch; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise TileLabelError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)
