"""Baseline: backbone, global average pooling, one linear classifier per label.

Attention is the class activation map (CAM, Zhou et al. 2016): the linear classifier
applied at every feature-map location. Because pooling is a plain average, the mean of a
label's CAM logits is exactly that label's logit; the attention drawn for the analyst is
sigmoid(CAM), i.e. how strongly each location on its own indicates the label.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.models.backbones import build_backbone
from engine.models.output import ModelOutput


@dataclass(frozen=True)
class GapLinearConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    backbone_weights: str | None = None  # local ImageNet weights file (ResNet)
    dropout: float = 0.2


class GapLinear(nn.Module):
    """ResNet/EfficientNet + global average pooling + linear head, with CAM attention."""

    def __init__(self, cfg: GapLinearConfig) -> None:
        super().__init__()
        weights = Path(cfg.backbone_weights) if cfg.backbone_weights else None
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained, weights)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.backbone.out_channels, cfg.n_labels)

    def classify_features(self, feats: torch.Tensor) -> ModelOutput:
        """Logits and CAM attention from a backbone feature map [B, D, h, w]."""
        pooled = self.dropout(feats.mean(dim=(2, 3)))
        logits = self.head(pooled)
        cam = torch.einsum("bdhw,cd->bchw", feats, self.head.weight) + self.head.bias[:, None, None]
        return ModelOutput(logits=logits, attention=torch.sigmoid(cam).detach(), aux={})

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.classify_features(self.backbone(x))
