"""ML-GCN baseline (Chen et al. 2019, "Multi-Label Image Recognition with Graph
Convolutional Networks"): a two-layer GCN turns label embeddings into one classifier per
label over the re-weighted label graph, applied to the globally max-pooled image feature.

Graph: binary adjacency P(Lj|Li) >= tau (0.4), re-weighted with p = 0.2 (ML-GCN Eq. 8),
then degree-normalised. GCN dims: embedding -> 1024 -> D (feature width), LeakyReLU(0.2).
Attention: each label's classifier applied at every feature-map location, through a
sigmoid (as the CAM of the gap-linear baseline).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.graph.label_graph import mlgcn_reweighted
from engine.models.backbones import build_backbone
from engine.models.gcn import (LEAKY_SLOPE, GraphConvolution, attach_label_embeddings,
                               label_adjacency)
from engine.models.output import ModelOutput

MLGCN_TAU, MLGCN_P, HIDDEN = 0.4, 0.2, 1024


@dataclass
class MLGCNConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    tau: float = MLGCN_TAU
    p: float = MLGCN_P
    label_embeddings: list | None = None
    label_graph: dict | None = None


class MLGCN(nn.Module):
    def __init__(self, cfg: MLGCNConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained)
        dim = self.backbone.out_channels
        attach_label_embeddings(self, cfg.label_embeddings, cfg.n_labels)
        binary = label_adjacency(cfg.label_graph, cfg.n_labels, cfg.tau).numpy()
        reweighted = torch.tensor(mlgcn_reweighted(binary, cfg.p), dtype=torch.float32)
        d = reweighted.sum(1).rsqrt()
        norm = reweighted * d[:, None] * d[None, :]
        self.gc1 = GraphConvolution(self.label_embeddings.shape[1], HIDDEN, norm)
        self.gc2 = GraphConvolution(HIDDEN, dim, norm)

    def classifiers(self) -> torch.Tensor:
        """W [C, D]: one classifier per label from the GCN."""
        return self.gc2(F.leaky_relu(self.gc1(self.label_embeddings), LEAKY_SLOPE))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feats = self.backbone(x)
        w = self.classifiers()
        logits = feats.amax(dim=(2, 3)) @ w.T
        attention = torch.sigmoid(torch.einsum("bdhw,cd->bchw", feats, w))
        return ModelOutput(logits, attention.detach(), {})
