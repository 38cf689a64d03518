"""SRDL: semantic representation and dependency learning (Pu et al. 2022,
shared/papers/srdl_pu2022...).

- Contextualised label embeddings (Eq. 3): A^{l+1} = LeakyReLU(V^ A^l W^l) over a
  learnable adjacency V, node features initialised from the label text embeddings; two
  layers. Choices: V^ = row-softmax(V); V starts at 4 I plus small noise (the paper says
  "randomly initialised"; from 0.01 randn alone row-softmax(V) is uniform, every label's
  context is the mean embedding and every label's spatial attention came out as the same
  map, correlation 1.000 between labels). With 4 I each label keeps 77 % of its own
  embedding at the start and learns how much context to take. The node features are the
text embeddings centred over the labels (their mean removed): label names share a large
common component (MiniLM vectors of the UC Merced names), and with it f_w(x_c) was
nearly the same vector for every label, so even with distinct contexts the spatial maps
of all labels correlated at 0.99 after training. For the same reason f_w has no bias:
after two GNN layers the contexts are small (|f_w(x_c)| about 0.06) and a bias shared by
all labels made the f_w vectors 0.92 alike in cosine; and the contexts are centred again
after the GNN, whose LeakyReLU outputs are mostly positive (a common component again:
cosine 0.78 between labels' f_w vectors, correlation 0.80 between their maps).
- CAR (Eq. 4-6): per label c, channel attention CA_c = sigmoid(f_c(tanh(f_ca(GMP F) *
  f_w(x_c)))) in [0,1]^D and spatial attention SA_c(x,y) = sigmoid(f_s(tanh(f_sa(F_xy) *
  f_w(x_c)))) in [0,1]^{h x w}; F^_c = 0.5 F*SA_c + 0.5 F*CA_c; f_c = GMP(F^_c).
- Classifier (Eq. 2): one linear classifier per label on f_c (choice: per-category weights,
  the usual reading of "a linear classifier" over category-specific features).
- OE (Eq. 7-10), training only: for each image's top-K labels by predicted probability,
  the spatial attention's marginals m_x = Norm(max_y SA), m_y = Norm(max_x SA) (min-max
  normalised) are thresholded at alpha; of the intervals >= alpha the one holding the
  global peak is kept (the widest if several hold a global peak), and SA is zeroed on
  that rectangle; the erased features give p^ and L = L_ori + L_era (Eq. 11-13).
Defaults: K = 3, alpha = 0.5 (the paper's best), attention width 512.
Attention for the analyst: sigmoid(w_c . F^_c(x, y) + b_c), label c's own classifier
(Eq. 2) on the CAR-attended features of Eq. 6 at each location, i.e. the logit that
location alone would give the label (a fixed curve, no per-tile rescaling), weighted by
the label's probability (engine/models/attention.py). It holds SA_c and CA_c and says
where the classifier finds the label. SA_c alone was shown before and did not localise:
on NWPU VHR-10 crops its peak hit the object 0.30 of the time, below the crop centre
(0.41), and no more often than an absent label's map (0.31); OE trains SA to move off
the most obvious region, and GMP reads one location per channel, so SA need not be high
on the object.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.attention import presence_weighted
from engine.models.backbones import build_backbone
from engine.models.gcn import LEAKY_SLOPE, attach_label_embeddings
from engine.models.output import ModelOutput

TOP_K, ALPHA, ATTENTION_DIM = 3, 0.5, 512
SELF_WEIGHT_INIT = 4.0  # V = 4 I + noise: see the module docstring


@dataclass
class SRDLConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    top_k: int = TOP_K
    alpha: float = ALPHA
    label_embeddings: list | None = None


def peak_interval(m: torch.Tensor, alpha: float) -> tuple[int, int]:
    """[start, end) of the run of m >= alpha holding the global peak (widest on ties);
    (0, 0), nothing, for a flat map, which has no peak to erase."""
    m = m.detach()
    above = (m >= alpha).tolist()
    runs, start = [], None
    for i, flag in enumerate(above + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    peak = float(m.max())
    holding = [r for r in runs if float(m[r[0]:r[1]].max()) >= peak]
    return max(holding, key=lambda r: r[1] - r[0]) if holding else (0, 0)


def min_max(v: torch.Tensor) -> torch.Tensor:
    return (v - v.min()) / (v.max() - v.min()).clamp(min=1e-6)


def erase_peak_region(sa: torch.Tensor, alpha: float) -> torch.Tensor:
    """SA [h, w] with the most obvious region (Eq. 7-10) set to zero."""
    m_x = min_max(sa.amax(dim=0))   # over rows y -> one value per column x (Eq. 7)
    m_y = min_max(sa.amax(dim=1))   # over columns x -> one value per row y (Eq. 8)
    x0, x1 = peak_interval(m_x, alpha)
    y0, y1 = peak_interval(m_y, alpha)
    erased = sa.clone()
    erased[y0:y1, x0:x1] = 0
    return erased


class SRDL(nn.Module):
    def __init__(self, cfg: SRDLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained)
        d, c = self.backbone.out_channels, cfg.n_labels
        attach_label_embeddings(self, cfg.label_embeddings, cfg.n_labels)
        e = self.label_embeddings.shape[1]
        self.adjacency = nn.Parameter(SELF_WEIGHT_INIT * torch.eye(c)        # V, learned
                                      + 0.01 * torch.randn(c, c))
        self.gnn = nn.ModuleList([nn.Linear(e, e, bias=False), nn.Linear(e, e, bias=False)])
        self.f_w = nn.Linear(e, ATTENTION_DIM, bias=False)  # label-only: see the docstring
        self.f_ca, self.f_c = nn.Linear(d, ATTENTION_DIM), nn.Linear(ATTENTION_DIM, d)
        self.f_sa, self.f_s = nn.Linear(d, ATTENTION_DIM), nn.Linear(ATTENTION_DIM, 1)
        self.classifier = nn.Parameter(torch.randn(c, d) * d ** -0.5)
        self.bias = nn.Parameter(torch.zeros(c))

    def label_context(self) -> torch.Tensor:
        """x_c [C, e]: GNN-contextualised label embeddings (Eq. 3)."""
        v = torch.softmax(self.adjacency, dim=1)
        a = self.label_embeddings - self.label_embeddings.mean(0, keepdim=True)  # centred
        for layer in self.gnn:
            a = F.leaky_relu(v @ layer(a), LEAKY_SLOPE)
        return a

    def attentions(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CA [B, C, D] (Eq. 4) and SA [B, C, h, w] (Eq. 5)."""
        context = self.label_context()
        w = self.f_w(context - context.mean(0, keepdim=True))                # [C, a], centred
        ca = torch.sigmoid(self.f_c(torch.tanh(self.f_ca(feats.amax(dim=(2, 3)))[:, None] * w)))
        sa_in = self.f_sa(feats.permute(0, 2, 3, 1))                          # [B, h, w, a]
        sa = torch.sigmoid(self.f_s(torch.tanh(sa_in[:, None] * w[None, :, None, None])))
        return ca, sa.squeeze(-1)

    @staticmethod
    def category_features(feats: torch.Tensor, ca: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
        """Eq. 6: F^_c = 0.5 F*SA_c + 0.5 F*CA_c, [B, C, D, h, w]."""
        return 0.5 * feats[:, None] * sa[:, :, None] + 0.5 * feats[:, None] * ca[..., None, None]

    def classify(self, feats: torch.Tensor, ca: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
        """Eq. 6 and 2: F^_c, GMP, per-label linear classifier."""
        return self.logits_of(self.category_features(feats, ca, sa))

    def logits_of(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Eq. 2 on F^_c [B, C, D, h, w]: GMP, then label c's linear classifier."""
        return (f_hat.amax(dim=(3, 4)) * self.classifier).sum(-1) + self.bias

    def evidence_maps(self, f_hat: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w]: label c's classifier (Eq. 2) applied to F^_c at each location, the
        logit the location alone would give (module docstring, "Attention")."""
        return torch.einsum("bcdhw,cd->bchw", f_hat, self.classifier) + self.bias[:, None, None]

    def erase(self, sa: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """OE: the top-K labels' spatial attention with their peak region erased."""
        erased = sa.clone()
        k = min(self.cfg.top_k, sa.shape[1])
        if k == 0:
            return erased
        top = logits.detach().topk(k, dim=1).indices
        for b in range(sa.shape[0]):
            for c in top[b].tolist():
                erased[b, c] = erase_peak_region(sa[b, c], self.cfg.alpha)
        return erased

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feats = self.backbone(x)
        ca, sa = self.attentions(feats)
        f_hat = self.category_features(feats, ca, sa)
        logits = self.logits_of(f_hat)
        aux = {}
        if self.training:
            aux["erased_logits"] = self.classify(feats, ca, self.erase(sa, logits))
        with torch.no_grad():  # the analyst's map: no gradient, no graph kept in training
            maps = torch.sigmoid(self.evidence_maps(f_hat))
        return ModelOutput(logits, presence_weighted(maps, logits), aux)

    def extra_losses(self, out: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_era (Eq. 12), added to the trainer's L_ori (Eq. 13)."""
        if "erased_logits" not in out.aux:
            return {}
        return {"erased": F.binary_cross_entropy_with_logits(out.aux["erased_logits"].float(),
                                                             targets)}
