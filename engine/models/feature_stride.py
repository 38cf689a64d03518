"""A backbone's feature map at stride 32 (its last stage) or 16, shared by the models that
offer ``feature_stride`` (CM-GM, Deep-LIFT).

At stride 16 the map is the backbone's stride-16 stage with its stride-32 map bilinearly
upsampled beside it: twice as many locations a side (16 x 16 on a 256 px tile), so a
label's map can separate objects a few metres apart, while the stride-32 channels keep
the last stage's semantics. Only backbones that expose a stride-16 stage
(``stage_outputs``, the EfficientNet-Lite family) offer it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelFileError

FEATURE_STRIDES = (16, 32)


def stride_channels(backbone: nn.Module, stride: int, arch: str, name: str) -> int:
    """Channels of the map ``stride_features`` gives; a clear error for an unusable stride.
    ``arch`` and ``name`` (the backbone's) only word the message."""
    if stride not in FEATURE_STRIDES:
        raise ModelFileError(f"{arch} feature_stride {stride} is not one of 16, 32")
    if stride == 32:
        return backbone.out_channels
    if not hasattr(backbone, "stage_outputs"):
        raise ModelFileError(f"{arch} feature_stride 16 needs a backbone with a stride-16 "
                             f"stage (efficientnet_lite*), not {name}")
    return backbone.stage_outputs["stride16"][1] + backbone.out_channels


def stride_features(backbone: nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
    """The stride-32 map, or the stride-16 map with the stride-32 map upsampled beside it."""
    if stride == 32:
        return backbone(x)
    taps = backbone.forward_stages(x, ("stride16", "stride32"))
    fine = taps["stride16"]
    coarse = F.interpolate(taps["stride32"], size=fine.shape[-2:], mode="bilinear",
                           align_corners=False)
    return torch.cat([fine, coarse], dim=1)
