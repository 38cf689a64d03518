"""Deep-LIFT: deep label-specific feature learning (Li et al. 2022, shared/papers/deep-lift...).

1. Image representation: a backbone feature map F [D, H, W]; ``feature_stride`` 32 (the
   last stage, the paper's) or 16 (the stride-16 stage with the stride-32 map upsampled
   beside it: 16 x 16 LIFT maps on a 256 px tile; engine/models/feature_stride.py).
2. Label correlation: label re-embeddings L [C, D] from the label text embeddings through
   AGCN (two attention graph convolutions, Eq. 3; paper dims 1024 -> D) or RGCN
   (512 -> 1024 -> residual block of 1024 (Eq. 4) -> D), LeakyReLU(0.2) between layers,
   adjacency from P(Lj|Li) >= tau (paper tau = 0.5).
3. Deep LIFT maps A = L F (Eq. 5): A [C, H, W], each label's similarity to each location.
4. Channel attention over the label maps (Eq. 6-7): M_c = sigmoid(MLP(avgpool A) +
   MLP(maxpool A)) with one shared hidden layer, A_att = M_c * A.
5. Prediction: [avgpool A_att || maxpool A_att] through an MLP with one hidden layer.

Choices where the paper is silent: the CAM MLP's hidden size is max(C // 2, 8) and the
final MLP's is 2C. In A = L F (Eq. 5) each label's re-embedding is used at unit length
times one learned gain g (initialised to 1): A = g (L / |L|) F. An earlier fixed factor
1/sqrt(D) on small GCN outputs made the logits nearly image-independent at
initialisation (std 0.001 across images against 0.22 for gap-linear, GCN gradients about
1e-3) and cost 0.13 mAP in the same budget; the raw product, on the other hand, has
values of std 13-56 on ImageNet features and diverged at lr 1e-2. Unit-length rows also
stop the GCN's over-smoothing from shrinking some labels' maps to nothing.

Label-specific term (``label_loss`` > 0; recipes/deeplift.toml sets 1.0; 0, the paper's
Eq. 8 alone, is the default of a model built without it). The prediction MLP mixes the C
channels, so nothing in Eq. 8 ties channel c of A_att to label c: trained by Eq. 8 alone,
the tanks channel was negative on NWPU tanks (mean -4.7) and an absent label's channel
peaked on the crop's object as often as the label's own (pointing 0.51, minus absent
+0.06). The paper's claim, each LIFT map the correspondence between one label and its
regions, is then made a training signal: each channel also scores its own label,
s_c = exp(k_c) (avg A_att[c] + max A_att[c]) / 2 + b_c (the two views of Eq. 6-7, one
scale and bias per label), with a BCE of weight ``label_loss`` beside Eq. 8. The
prediction stays the paper's MLP. Fine-tuned by the recipe with the term: NWPU pointing
0.67, minus absent +0.48, test mAP 0.944 (0.922 without; docs/benchmarks.md); with F at
stride 16 (recipes/deeplift-stride16.toml) 0.81, +0.48, test mAP 0.951.

Attention for the analyst: with the label-specific term, exp(k_c) A_att[c](x) + b_c, the
score s_c of a tile whose every location looked like x (as gap-linear's CAM is its logit
per location), through a sigmoid; without it, sigmoid(A_att[c]). Either is a fixed curve
(no per-tile min-max), weighted by the label's probability (engine/models/attention.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.attention import presence_weighted
from engine.models.backbones import build_backbone
from engine.models.feature_stride import stride_channels, stride_features
from engine.models.gcn import (LEAKY_SLOPE, AttentionGraphConvolution, GraphConvolution,
                               ResidualGraphBlock, attach_label_embeddings, label_adjacency)
from engine.models.output import ModelOutput

DEEPLIFT_TAU = 0.5


@dataclass
class DeepLiftConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    variant: str = "agcn"  # agcn | rgcn
    tau: float = DEEPLIFT_TAU
    label_embeddings: list | None = None
    label_graph: dict | None = None
    agcn_dims: tuple[int, ...] = (1024,)
    rgcn_dims: tuple[int, ...] = (512, 1024)
    label_loss: float = 0.0   # weight of the label-specific term (docstring); 0 = Eq. 8 alone
    feature_stride: int = 32  # F's stride: 32 or 16 (step 1 above)


def normalised_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    a = adjacency + torch.eye(len(adjacency))
    d = a.sum(1).rsqrt()
    return a * d[:, None] * d[None, :]


class LabelReembedding(nn.Module):
    """Label embeddings [C, d] -> label re-embeddings L [C, D] by AGCN or RGCN."""

    def __init__(self, cfg: DeepLiftConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        adjacency = label_adjacency(cfg.label_graph, cfg.n_labels, cfg.tau)
        if cfg.variant == "agcn":
            dims = (in_dim, *cfg.agcn_dims, out_dim)
            self.layers = nn.ModuleList(AttentionGraphConvolution(a, b, adjacency)
                                        for a, b in zip(dims, dims[1:]))
        elif cfg.variant == "rgcn":
            norm = normalised_adjacency(adjacency)
            width = cfg.rgcn_dims[-1]
            dims = (in_dim, *cfg.rgcn_dims)
            self.layers = nn.ModuleList([*(GraphConvolution(a, b, norm) for a, b in
                                           zip(dims, dims[1:])),
                                         ResidualGraphBlock(width, norm),
                                         GraphConvolution(width, out_dim, norm)])
        else:
            raise ValueError(f"Deep-LIFT variant must be agcn or rgcn, not {cfg.variant!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 and not isinstance(layer, ResidualGraphBlock):
                x = F.leaky_relu(x, LEAKY_SLOPE)
        return x


class ChannelAttention(nn.Module):
    """M_c = sigmoid(MLP(avg A) + MLP(max A)) over the label channels (Eq. 6)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 8)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(a.mean(dim=(2, 3))) + self.mlp(a.amax(dim=(2, 3))))


class OwnLabelScore(nn.Module):
    """s_c = exp(k_c) (avg A_att[c] + max A_att[c]) / 2 + b_c: channel c scores label c."""

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(n_labels))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, a_att: torch.Tensor) -> torch.Tensor:
        pooled = (a_att.mean(dim=(2, 3)) + a_att.amax(dim=(2, 3))) / 2
        return self.log_scale.exp() * pooled + self.bias

    def per_location(self, a_att: torch.Tensor) -> torch.Tensor:
        """s_c of a tile made of location x alone (avg = max = A_att[c](x)): [B, C, H, W]."""
        return self.log_scale.exp()[:, None, None] * a_att + self.bias[:, None, None]


class DeepLift(nn.Module):
    def __init__(self, cfg: DeepLiftConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained)
        self.feature_stride = cfg.feature_stride
        dim = stride_channels(self.backbone, cfg.feature_stride, "deeplift", cfg.backbone)
        attach_label_embeddings(self, cfg.label_embeddings, cfg.n_labels)
        self.reembed = LabelReembedding(cfg, self.label_embeddings.shape[1], dim)
        self.channel_attention = ChannelAttention(cfg.n_labels)
        c = cfg.n_labels
        self.classifier = nn.Sequential(nn.Linear(2 * c, 2 * c), nn.ReLU(), nn.Linear(2 * c, c))
        self.gain = nn.Parameter(torch.ones(()))  # the re-embeddings' length (docstring)
        self.label_loss = cfg.label_loss
        self.own_label = OwnLabelScore(c) if cfg.label_loss > 0 else None

    def lift_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """A = L F (Eq. 5): [B, C, H, W]."""
        labels = F.normalize(self.reembed(self.label_embeddings), dim=1) * self.gain
        return torch.einsum("cd,bdhw->bchw", labels, feats)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        a = self.lift_maps(stride_features(self.backbone, x, self.feature_stride))
        m_c = self.channel_attention(a)
        a_att = m_c[:, :, None, None] * a                                   # Eq. 7
        pooled = torch.cat([a_att.mean(dim=(2, 3)), a_att.amax(dim=(2, 3))], dim=1)
        logits = self.classifier(pooled)
        aux = {"channel_attention": m_c}
        if self.own_label is None:
            maps = torch.sigmoid(a_att.detach())
        else:
            aux["own_label_logits"] = self.own_label(a_att)
            maps = torch.sigmoid(self.own_label.per_location(a_att.detach()))
        return ModelOutput(logits, presence_weighted(maps, logits), aux)

    def extra_losses(self, out: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The label-specific term (docstring), added to the trainer's Eq. 8."""
        if "own_label_logits" not in out.aux:
            return {}
        return {"own_label": self.label_loss * F.binary_cross_entropy_with_logits(
            out.aux["own_label_logits"].float(), targets)}
