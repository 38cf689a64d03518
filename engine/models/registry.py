"""Architecture registry: ``build(arch, config)`` makes any model the engine knows.

Each entry names the architecture, a one-line description, the paper it implements and
a builder taking the model.json ``arch_config`` plus label count and band count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from engine.errors import ModelFileError


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    paper: str
    builder: Callable[[dict[str, Any], int, int, bool], nn.Module]


def _build_gap_linear(cfg: dict[str, Any], n_labels: int, in_bands: int,
                      pretrained: bool) -> nn.Module:
    from engine.models.gap_linear import GapLinear, GapLinearConfig

    return GapLinear(GapLinearConfig(n_labels=n_labels, in_bands=in_bands,
                                     backbone=cfg.get("backbone", "efficientnet_lite0"),
                                     pretrained=pretrained,
                                     backbone_weights=cfg.get("backbone_weights"),
                                     dropout=float(cfg.get("dropout", 0.2))))


ARCHITECTURES: dict[str, Architecture] = {
    "gap-linear": Architecture(
        "gap-linear",
        "baseline: backbone + global average pooling + linear head; CAM attention",
        "Zhou et al. 2016, Learning Deep Features for Discriminative Localization (CAM)",
        _build_gap_linear),
}


def build(arch: str, arch_config: dict[str, Any], n_labels: int, in_bands: int,
          pretrained: bool = False) -> nn.Module:
    """Build a model; ``pretrained`` loads offline ImageNet backbone weights."""
    if arch not in ARCHITECTURES:
        raise ModelFileError(f"unknown architecture '{arch}'; this engine knows: "
                             f"{', '.join(sorted(ARCHITECTURES))}. Update TileLabel or "
                             "choose a model made for this version.")
    return ARCHITECTURES[arch].builder(arch_config, n_labels, in_bands, pretrained)
