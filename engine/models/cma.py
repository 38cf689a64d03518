"""CMA / MS-CMA with ASGE (You et al. 2020, shared/papers/cma_you2020...).

- ASGE (Eq. 1-5): the label graph's conditional probabilities A_ij = P(v_i | v_j) are
  symmetrised, A' = (A + A^T) / 2; a network Phi of three fully-connected layers (each
  with BN and ReLU, 256 wide) maps each label's one-hot vector to an embedding e_i, fitted
  so that cos(e_i, e_j) approaches A'_ij, with the relaxation: pairs where A_ij < alpha and
  cos < alpha do not count (alpha = 0.1). Fitted when the model is built (seeded, ~1 s)
  and kept in the weights.
- Backbone features reduced by a 1x1 convolution to I [C, H, W] (C = 512 here).
- Cross-modality transformer (Eq. 6): two 1x1 convolutions with BN project I to the
  embedding space, I_s; ReLU after the first only. Choice: with a ReLU after the second
  too, I_s and the (post-ReLU) ASGE embeddings are both non-negative, every cosine is
  >= 0, the ReLU of Eq. 7 never acts and the maps came out flat (normalised entropy
  0.74); without it a location can point away from a label and Eq. 7 zeroes it.
- Category-wise attention (Eq. 7-8): z_k^i = ReLU(cos(I_s^i, e_k)), a_k^i = z_k^i / sum_i z_k^i.
- Category features and classifiers (Eq. 9-10): h_k = sum_i a_k^i I^i, y_k = w_k^T h_k + b_k.
- MS-CMA (Eq. 11): the same head on several backbone stages (here the stride-16 and
  stride-32 maps of EfficientNet-Lite0, or layer3/layer4 of a ResNet); the probabilities
  are averaged and returned as logits.
- The class-imbalance loss of Eq. 12 is the trainer's ``--loss imbalance-bce``.
Attention for the analyst: (1 - exp(-M a_k^i)) sigmoid(w_k^T I^i + b_k), weighted by
the label's probability. Eq. 9-10 make the logit y_k = sum_i a_k^i (w_k^T I^i + b_k): the
attention a_k^i times the logit location i alone would give. The map shows both factors,
each through a fixed curve into [0, 1]: the attention distribution by the curve the
contract uses for distributions over the M locations (engine/models/attention.py: 0.63
for a uniform spread, near 1 where the weight concentrates), the location's logit by a
sigmoid. Measured on NWPU VHR-10 crops (benchmarks/attention_localisation.py, 5-epoch
model): pointing 0.74 with both factors as shown (0.75 with z_k in place of the curve
of a_k), 0.68 with z_k alone, 0.71 with the location's logit alone; an absent label's
map peaked on the object 0.33-0.39 of the time with each. z_k itself (the ReLU cosine of
Eq. 7) is small for a trained model: present labels' maps peaked at 0.32 on average,
below what the plugin's ramp shows, hence the curve of a_k (present maps then peak at
0.77).
MS-CMA shows the mean of its scales' maps at the finest scale's resolution (the coarser
map upsampled bilinearly), as Eq. 11 averages their scores.

Absent-label attention term (ours, not the paper's; arch_config ``absent_attention``, 0
by default = the paper). Eq. 9-10 make the logit y_k = sum_i a_k^i l_k^i, l_k^i the
logit of location i alone. For a label absent from the tile, BCE's gradient through a_k
moves the label's attention onto the locations its own logits reject; the asymmetric
loss's probability margin (engine/train/losses.py, clip 0.05) sends no gradient once p_k
< 0.05, so an absent label's attention is left where the embedding similarity puts it,
which on NWPU crops is the crop's object (benchmarks/cma_map_factors.py: an absent
label's Eq. 8 map on the object 0.43-0.59 of the time, 0.36 under BCE). The term gives
back that gradient, and only it: weight x softplus(sum_i a_k^i stop_grad(l_k^i))
over the tile's absent labels (the value is BCE's negative term on y_k; its gradient
reaches the classifier's w_k and b_k not at all, only the attention path: Eq. 6's
projections and the shared features beneath them), summed over labels and averaged over
images as the asymmetric loss is (engine/train/losses.py; unknown labels skipped, the
sum scaled to the known share), so weight 1 pulls an absent label's attention as hard,
next to the asymmetric loss's positives, as BCE's negatives pull it next to BCE's;
averaged over MS-CMA's scales. Measured (docs/benchmarks.md, "The absent-label attention
term"; mosaics + ASL, weight 0.1, seeds 0 and 1): at seed 0 absent labels' attention
leaves the NWPU crops' objects (on them on 0.33 of crops, from 0.45), the present
labels' with it (pointing 0.65, from 0.83, for the attention alone), so the overlay's
margin is unchanged (+0.42) and accuracy falls; seed 1 is worse (+0.38); at weight 1
training broke down. Off by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelFileError
from engine.graph.label_graph import LabelGraph
from engine.models.attention import distribution_to_unit, presence_weighted
from engine.models.backbones import build_backbone
from engine.models.output import ModelOutput

ASGE_DIM, ASGE_ALPHA, ASGE_STEPS, ASGE_LR = 256, 0.1, 300, 0.01
FEATURE_DIM = 512


def asge_target(label_graph: dict) -> torch.Tensor:
    """A' = (A + A^T) / 2 with A_ij = P(v_i | v_j) (Eq. 1)."""
    probs = LabelGraph.from_json(label_graph).probs  # probs[i, j] = P(L_j | L_i)
    a = torch.tensor(probs.T, dtype=torch.float32)    # A_ij = P(v_i | v_j)
    return (a + a.T) / 2


def asge_loss(e: torch.Tensor, a: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 4-5: squared error of cosine similarities, relaxed below alpha."""
    e = F.normalize(e, dim=1)
    cos = e @ e.T
    sigma = ~((a < alpha) & (cos < alpha))
    return (sigma * (cos - target) ** 2).sum()


class ASGE(nn.Module):
    """Phi: one-hot label -> embedding, three FC layers each with BN and ReLU (Eq. 2)."""

    def __init__(self, n_labels: int, dim: int = ASGE_DIM) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d_in in (n_labels, dim, dim):
            layers += [nn.Linear(d_in, dim), nn.BatchNorm1d(dim), nn.ReLU()]
        self.phi = nn.Sequential(*layers)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return self.phi(one_hot)


def fit_asge(label_graph: dict, n_labels: int, steps: int = ASGE_STEPS,
             alpha: float = ASGE_ALPHA, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Label embeddings E [N, 256] fitted to the graph; returns (E, loss per step)."""
    a = torch.tensor(LabelGraph.from_json(label_graph).probs.T, dtype=torch.float32)
    target = asge_target(label_graph)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ASGE(n_labels)
        opt = torch.optim.Adam(net.parameters(), lr=ASGE_LR)
        eye, losses = torch.eye(n_labels), []
        for _ in range(steps):
            opt.zero_grad()
            loss = asge_loss(net(eye), a, target, alpha)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        with torch.no_grad():
            return net(eye), losses


class CrossModalityHead(nn.Module):
    """Eq. 6-10 on one feature map."""

    def __init__(self, in_channels: int, n_labels: int, embed_dim: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, FEATURE_DIM, 1, bias=False),
                                    nn.BatchNorm2d(FEATURE_DIM), nn.ReLU())
        self.cmt = nn.Sequential(nn.Conv2d(FEATURE_DIM, embed_dim, 1, bias=False),
                                 nn.BatchNorm2d(embed_dim), nn.ReLU(),
                                 nn.Conv2d(embed_dim, embed_dim, 1, bias=False),
                                 nn.BatchNorm2d(embed_dim))  # signed: see the docstring
        self.weight = nn.Parameter(torch.randn(n_labels, FEATURE_DIM) * FEATURE_DIM ** -0.5)
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def similarity(self, feats: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """z [B, N, M]: ReLU of the cosine between each location and each label (Eq. 7)."""
        i_s = F.normalize(self.cmt(feats).flatten(2), dim=1)            # [B, Ce, M]
        return F.relu(torch.einsum("nc,bcm->bnm", F.normalize(embeddings, dim=1), i_s))

    def attention(self, feats: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """a [B, N, M]: z normalised over locations (Eq. 8)."""
        z = self.similarity(feats, embeddings)
        return z / z.sum(-1, keepdim=True).clamp(min=1e-6)

    def location_logits(self, i: torch.Tensor) -> torch.Tensor:
        """[B, N, M]: the logit each location of I alone would give (Eq. 10 at one location)."""
        return torch.einsum("nc,bcm->bnm", self.weight, i.flatten(2)) + self.bias[:, None]

    def forward(self, feats: torch.Tensor, embeddings: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [B, N], the map the analyst sees [B, N, H, W] (module docstring) and the
        logits again with their gradient through the attention only [B, N]."""
        i = self.reduce(feats)
        a = self.attention(i, embeddings)                                  # Eq. 7-8
        h = torch.einsum("bnm,bcm->bnc", a, i.flatten(2))                  # Eq. 9
        logits = (h * self.weight).sum(-1) + self.bias                     # Eq. 10
        location = self.location_logits(i).detach()  # read below, never trained through
        # sum_i a_k^i l_k^i equals Eq. 10's y_k; with l detached only a_k learns from it
        attention_path = (a * location).sum(-1)
        with torch.no_grad():  # the analyst's map: no gradient, no graph kept in training
            evidence = distribution_to_unit(a, -1) * torch.sigmoid(location)
        return logits, evidence.reshape(*a.shape[:2], *feats.shape[-2:]), attention_path


@dataclass
class CMAConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    multi_scale: bool = False
    label_graph: dict | None = None
    absent_attention: float = 0.0  # weight of the absent-label attention term (docstring)


class CMA(nn.Module):
    # the absent-label attention term skips unknown labels (NaN targets), so weakly
    # labelled data may train a CMA model (engine/train/trainer.py)
    extra_losses_skip_unknown = True

    def __init__(self, cfg: CMAConfig) -> None:
        super().__init__()
        if cfg.absent_attention < 0:
            raise ModelFileError(f"absent_attention is a loss weight, 0 or more (0: the "
                                 f"paper's losses only), got {cfg.absent_attention}")
        self.absent_attention = cfg.absent_attention
        if cfg.label_graph is None:
            raise ModelFileError("CMA needs the label graph in model.json (train it with "
                                 "'tilelabel train --arch cma')")
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained)
        if not hasattr(self.backbone, "stage_outputs"):
            raise ModelFileError("CMA/MS-CMA runs on an efficientnet_lite backbone here "
                                 "(--backbone efficientnet_lite0, _lite1 or _lite2)")
        self.stages = ("stride16", "stride32") if cfg.multi_scale else ("stride32",)
        embeddings, self.asge_losses = fit_asge(cfg.label_graph, cfg.n_labels)
        self.register_buffer("label_embeddings", embeddings)  # kept in the weights
        self.heads = nn.ModuleDict({s: CrossModalityHead(self.backbone.stage_outputs[s][1],
                                                         cfg.n_labels, ASGE_DIM)
                                    for s in self.stages})

    def forward(self, x: torch.Tensor) -> ModelOutput:
        maps = self.backbone.forward_stages(x, self.stages)
        probs, scale_maps, attention_paths = [], [], []
        for stage in self.stages:
            logits, evidence, attention_path = self.heads[stage](maps[stage],
                                                                 self.label_embeddings)
            probs.append(torch.sigmoid(logits))
            scale_maps.append(evidence)
            attention_paths.append(attention_path)
        p = torch.stack(probs).mean(0).clamp(1e-6, 1 - 1e-6)             # Eq. 11
        logits = torch.log(p) - torch.log1p(-p)
        size = scale_maps[0].shape[-2:]                                  # the finest scale
        fused = torch.stack([F.interpolate(s, size=size, mode="bilinear", align_corners=False)
                             if s.shape[-2:] != size else s for s in scale_maps]).mean(0)
        aux = ({"attention_path_logits": attention_paths}
               if self.training and self.absent_attention > 0 else {})
        return ModelOutput(logits, presence_weighted(fused.detach(), logits), aux)

    def extra_losses(self, out: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The absent-label attention term (module docstring); none when its weight is 0."""
        if "attention_path_logits" not in out.aux:
            return {}
        absent = (targets == 0).to(targets.dtype)          # NaN (unknown) is not absent
        # sum over labels, mean over images, scaled to the known share (as the ASL is)
        scale = targets.shape[1] / torch.isfinite(targets).sum().clamp(min=1)
        terms = [(F.softplus(y.float()) * absent).sum() * scale
                 for y in out.aux["attention_path_logits"]]
        return {"absent_attention": self.absent_attention * torch.stack(terms).mean()}


def embedding_cosines(model: CMA) -> np.ndarray:
    e = F.normalize(model.label_embeddings, dim=1)
    return (e @ e.T).numpy()
