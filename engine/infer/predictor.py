"""Running a loaded PyTorch model on batches of normalised tiles."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from engine.infer.predictor_base import TilePredictor
from engine.models.spec import ModelSpec


class Predictor(TilePredictor):
    """The PyTorch runtime: float16 autocast on CUDA, float32 on the CPU."""

    runtime = "torch"

    def __init__(self, model: nn.Module, spec: ModelSpec, device: torch.device) -> None:
        super().__init__(spec)
        self.model = model.to(device).eval()
        self.device = device
        self.device_type = device.type

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(batch, dict):
            x = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch.items()}
        else:
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with amp:
            out = self.model(x)
        probs = torch.sigmoid(out.logits.float()).cpu().numpy()
        att = None if out.attention is None else out.attention.float().cpu().numpy()
        return probs, att
