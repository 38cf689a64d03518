"""Backbones: image [B, bands, H, W] -> feature map [B, channels, h, w].

Every backbone accepts any number of input bands; with pretrained weights the first
convolution is adapted from the RGB filters (never silently re-initialised).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelFileError
from engine.models.backbones.efficientnet_lite import (
    LITE_VARIANTS,
    EfficientNetLite,
    adapt_first_conv,
    pretrained_efficientnet_lite,
)

BACKBONES = (*LITE_VARIANTS, "resnet50", "resnet101")


class ResNetFeatures(nn.Module):
    """torchvision ResNet-50/101 without its pooling and classifier."""

    def __init__(self, depth: int, in_bands: int, weights_file: Path | None) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if weights_file is not None:
            state = _read_resnet_weights(weights_file)
            state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], in_bands)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.conv1 = nn.Conv2d(in_bands, 64, 7, 2, 3, bias=False)
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ModelFileError(f"{weights_file} does not hold ResNet-{depth} weights "
                                     f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        elif in_bands != 3:
            net.conv1 = nn.Conv2d(in_bands, 64, 7, 2, 3, bias=False)
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.out_channels = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _read_resnet_weights(path: Path) -> dict[str, torch.Tensor]:
    """ResNet ImageNet weights from a local .safetensors file.

    Pickled .pth files are refused: a weights file from elsewhere must not be able to
    run code. Convert a torchvision checkpoint you trust once with
    ``safetensors.torch.save_file(torch.load(p, weights_only=True), "resnet50.safetensors")``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ResNet weights file not found: {path}")
    if path.suffix != ".safetensors":
        raise ModelFileError(
            f"{path} is not a .safetensors file; TileLabel does not load pickled weights. "
            "Convert a checkpoint you trust with: python -c \"import torch, safetensors.torch "
            f"as s; s.save_file(torch.load('{path}', weights_only=True), "
            f"'{path.with_suffix('.safetensors')}')\"")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({exc}); convert the "
                             "weights again or download them anew") from exc


def build_backbone(name: str, in_bands: int, pretrained: bool = False,
                   weights_file: Path | None = None) -> nn.Module:
    """Build a backbone by name; ``pretrained`` loads offline ImageNet weights."""
    if name in LITE_VARIANTS:
        return (pretrained_efficientnet_lite(name, in_bands) if pretrained
                else EfficientNetLite(name, in_bands))
    if name in ("resnet50", "resnet101"):
        if pretrained and weights_file is None:
            raise ModelFileError(
                f"{name} ImageNet weights are not packaged; pass a local weights file "
                "with --backbone-weights FILE.safetensors, or use an efficientnet_lite "
                "backbone (weights packaged)")
        return ResNetFeatures(int(name[6:]), in_bands, weights_file if pretrained else None)
    raise ModelFileError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
