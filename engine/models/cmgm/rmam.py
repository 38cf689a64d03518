"""Residual multi-attention mechanism (RMAM, CM-GM Section 3.1), built on MA-CNN's channel
grouping (Zheng et al. 2017, "Learning Multi-Attention Convolutional Neural Network").

F = [W1 * X] is the feature map [B, c, h, w]. Each of the N parts has its own two-layer FC
(c -> hidden, tanh, -> c, sigmoid) turning the pooled features into channel weights d^n
(MA-CNN's channel grouping). Part n's response is s_n = sum_j d^n_j F_j / sum_j d^n_j, the
channel-weighted mean response of its group, and its attention map is

    M_n = sigmoid(kappa_n (s_n - mean_k s_k - b_n))

with a learned sharpness kappa_n and offset b_n per part. (MA-CNN writes
sigmoid(sum_j d_j F_j); with hundreds of non-negative channels that saturates at 1.)
Two choices, each made against a measured failure:
- The offset b_n is absolute, the same for every image, so a part whose channels do not
  respond on a tile gives a dark map there. An earlier version centred s_n on each map's
  own mean, which keeps half of every map above 0.5 whatever the image; the diversity term
  then scored 17 identical maps *lower* than distinct ones (1.116 vs 1.334).
- mean_k s_k, the response of all parts at that location, is subtracted: a part lights
  where its own channels respond more than the channels of the other parts, i.e. where it
  explains the image better than they do. Every channel group of a CNN also fires on
  whatever is salient on the tile, and that shared component made the part maps alike: on
  frozen EfficientNet-Lite0 features of UC Merced (val split) the maps of different parts
  correlated 0.66-0.74 through five epochs (learned W1, frozen backbone), and the
  grouping FCs start saturated at their cluster indicators (below), so the diversity term
  could not pull the maps apart in that budget. With the shared response subtracted the
  correlation is -0.01 to -0.03, and classification improved too (val mAP 0.843 against
  0.709 in the same budget: parts that differ give Eq. 1 different features to choose
  from).
Competing parts (``competing``, our option; CMGMConfig.part_maps = "competing"): the parts
share each location with one another and with a null part of logit 0,

    M_n = exp(z_n) / (1 + sum_k exp(z_k)),   z_n = kappa_n (s_n - mean_k s_k - b_n),

which is sigmoid(z_n) where part n alone responds and splits the location where several
do. With independent sigmoids every part could stay lit over the whole tile: fine-tuned
at stride 16, the part maps were mostly on or off over the whole tile (tile-level
switches, docs/benchmarks.md), the diversity term alone did not pull them apart. The null
part keeps a location dark where no part responds, so an absent label's part stays dim.
Measured (recipes/cmgm-competing.toml, seed 0): part maps uncorrelated (-0.02), a label's
part alone points at its NWPU object 0.42 of the time (independent parts at stride 32:
0.27); the trees and sand parts split golfcourse79, but on airplane80 and harbor33 the
labels' own parts stay dark and the null part wins (docs/cmgm_attention_competing.jpg).

``calibrate`` sets b_n to the 80th percentile of the contrast over the training sample and
kappa_n to 4 / its standard deviation, so about a fifth of each part's locations start lit.

The part feature P_n is a c-vector, pooled over the map (average pooling):
- plain MA-CNN:                 P_n[j] = mean_xy(F_j * M_n)
- "N", channel-normalised (Eq. 2): P_n[j] = c * d_j / sum_k d_k * mean_xy(F_j * M_n)
  (Eq. 2's 1/sum d up to the constant c, which keeps the features' magnitude);
- "R", residual (Eq. 3):        M_n is replaced by (1 + M_n) in the pooling.

Grouping loss (MA-CNN Eq. 5-7): compactness Dis(M_n) = sum_xy m_n(x,y) ||(x,y) - t_n||^2
around the map's peak t_n, plus lambda * diversity Div(M_n) = sum_xy m_n(x,y)
(max_{k != n} m_k(x,y) - mrg), lambda = 2 and mrg = 0.02 as in MA-CNN. Choices: the
compactness uses each map normalised to sum 1 (so it measures spread, not mass) and
coordinates in [0, 1]; the diversity uses the maps as they are (values in [0, 1], where
the margin lets overlaps below mrg go unpunished) averaged over locations; both are
averaged over parts (MA-CNN sums them) so their weight does not grow with N.

Initialisation from peak responses (Section 3.1): each channel is described by the
coordinates of its peak response on a set of training images; k-means clusters the
channels into N groups of at most ceil(c / N) channels each (balanced: unconstrained
k-means gave groups of 1 to 89 channels), and each part's FC is set to output its group's indicator
(last layer: zero weights, bias +6 inside the group, -6 outside). MA-CNN pre-trains the
FCs towards that indicator; setting it directly gives the same starting point. The bias
must be large: a part's group holds a few dozen of c = 512 channels, and at -3 (weight
0.05) the other channels still carried about half of the weight, so every part's map
came out alike (measured on UC Merced airplane80: mean correlation between the part
maps 0.81 at +-3, 0.31 at +-6).

Part-to-label assignment (Eq. 1): the classifier V scores every part feature; each part
is given the label V predicts for it, and a label takes the strongest of its own parts
(or, owning none, the part that responds most to it): ``assign_parts``. While training,
``exclusive_part_loss`` (CMGMConfig.part_loss = "exclusive", our option) gives each label
the tile holds a part of its own and asks that part to tell its label from the tile's
others. Measured (recipes/cmgm-exclusive.toml, seeds 0 and 1): part pointing on NWPU 0.54
and 0.65 (attended evidence alone 0.48 and 0.62), and on airplane80 airplane and pavement
on parts of their own; on harbor33 water, ship and dock still share one part
(docs/benchmarks.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KAPPA_INIT = 4.0
DIVERSITY_WEIGHT = 2.0   # MA-CNN's lambda
DIVERSITY_MARGIN = 0.02  # MA-CNN's mrg
GROUP_LOGIT = 6.0
LIT_FRACTION = 0.2  # share of each part's locations lit at initialisation


class ChannelGrouping(nn.Module):
    """N two-layer FCs, one per part: pooled features [B, c] -> channel weights d [B, N, c]."""

    def __init__(self, channels: int, parts: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(parts, channels, hidden) / channels ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(parts, hidden))
        self.w2 = nn.Parameter(torch.randn(parts, hidden, channels) / hidden ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(parts, channels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.einsum("bc,nch->bnh", pooled, self.w1) + self.b1)
        return torch.sigmoid(torch.einsum("bnh,nhc->bnc", h, self.w2) + self.b2)

    @torch.no_grad()
    def initialise(self, groups: torch.Tensor) -> None:
        """Make part n output (nearly) the indicator of channel group n."""
        one_hot = F.one_hot(groups, self.b2.shape[0]).T.float()  # [N, c]
        self.w2.zero_()
        self.b2.copy_(GROUP_LOGIT * (2 * one_hot - 1))


class ResidualMultiAttention(nn.Module):
    """Part attention maps M [B, N, h, w] and part features P [B, N, c] (Eq. 2/3)."""

    def __init__(self, channels: int, parts: int, hidden: int, normalise: bool,
                 residual: bool, competing: bool = False) -> None:
        super().__init__()
        self.grouping = ChannelGrouping(channels, parts, hidden)
        self.kappa = nn.Parameter(torch.full((parts,), KAPPA_INIT))
        self.offset = nn.Parameter(torch.zeros(parts))                  # b_n
        self.normalise, self.residual = normalise, residual
        self.competing = competing

    @staticmethod
    def responses(feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """s_n - mean_k s_k [B, N, h, w]: each part's channel-weighted mean response, less
        the mean response of all parts at that location (module docstring)."""
        s = torch.einsum("bnc,bchw->bnhw", d, feats) / d.sum(-1)[..., None, None].clamp(min=1e-6)
        return s - s.mean(1, keepdim=True)

    def attention(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        s = self.responses(feats, d) - self.offset[None, :, None, None]
        z = self.kappa[None, :, None, None] * s
        if not self.competing:
            return torch.sigmoid(z)
        null = torch.zeros_like(z[:, :1])                 # the null part's logit
        return torch.softmax(torch.cat([null, z], dim=1), dim=1)[:, 1:]

    @torch.no_grad()
    def calibrate(self, feats: torch.Tensor, lit: float = LIT_FRACTION) -> None:
        """b_n at the (1 - lit) quantile of part n's responses on ``feats``, kappa_n at
        KAPPA_INIT / their standard deviation (module docstring)."""
        s = self.responses(feats, self.grouping(feats.mean(dim=(2, 3))))
        s = s.transpose(0, 1).flatten(1)                                 # [N, B*h*w]
        self.offset.copy_(torch.quantile(s.float(), 1 - lit, dim=1))
        self.kappa.copy_(KAPPA_INIT / s.float().std(dim=1).clamp(min=1e-6))

    def pooled_parts(self, feats: torch.Tensor, maps: torch.Tensor,
                     d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, P_attended), both [B, N, c]: P by Eq. 2 / Eq. 3, and P_attended the same
        feature pooled by M_n alone (MA-CNN's part feature, no residual). With R,
        mean(F (1 + M_n)) = mean(F) + mean(F M_n), so one pooling gives both."""
        attended = torch.einsum("bchw,bnhw->bnc", feats, maps) / maps[0, 0].numel()
        pooled = attended + feats.mean(dim=(2, 3))[:, None] if self.residual else attended
        if self.normalise:                                              # Eq. 2: d_j / sum d
            scale = d * (d.shape[-1] / d.sum(-1, keepdim=True).clamp(min=1e-6))
            pooled, attended = pooled * scale, attended * scale
        return pooled, attended

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Part maps M [B, N, h, w], part features P (Eq. 2/3) and P_attended
        (``pooled_parts``)."""
        d = self.grouping(feats.mean(dim=(2, 3)))
        maps = self.attention(feats, d)
        return (maps, *self.pooled_parts(feats, maps, d))


def assign_parts(part_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 1: each part n is given the label V predicts for it, Y_n = argmax V(P_n), and a
    label with several parts takes the one of higher response ("the part with the higher
    response value will be selected"). So two labels never share a part they own.

    A label that no part predicts still needs a part feature (the LSTM reads one per label):
    it takes the part V scores highest for it (our completion; the paper does not say).
    An earlier version gave every label that part, which let one part serve several labels
    (pavement and airplane both on the airplane's part, docs/cmgm_attention.png).

    part_logits [B, N, C] -> part index [B, C]."""
    labels = torch.arange(part_logits.shape[-1], device=part_logits.device)
    owned = part_logits.argmax(dim=2)[..., None] == labels                  # [B, N, C]
    own_best = part_logits.masked_fill(~owned, float("-inf")).argmax(dim=1)
    return torch.where(owned.any(dim=1), own_best, part_logits.argmax(dim=1))


def distinct_parts(part_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """While training: a part of its own for every label the image holds, [B, C] part index
    (-1 for absent labels). Greedy on V's scores: the highest (part, label) pair first, then
    the highest among the parts and labels left. ``assign_parts`` lets a label that owns no
    part borrow another label's (pavement on the airplane's part); this one never does, so
    ``exclusive_part_loss`` can ask each part to tell its label from the others."""
    b, n, c = part_logits.shape
    present = targets > 0.5
    scores = part_logits.detach().float().masked_fill(~present[:, None, :], float("-inf"))
    choice = torch.full((b, c), -1, dtype=torch.long, device=part_logits.device)
    rows = torch.arange(b, device=part_logits.device)
    for _ in range(min(n, c)):
        flat = scores.flatten(1).argmax(1)
        open_pair = scores.flatten(1)[rows, flat] > float("-inf")
        part, label = flat // c, flat % c
        choice[rows[open_pair], label[open_pair]] = part[open_pair]
        scores[rows[open_pair], part[open_pair], :] = float("-inf")   # the part is taken
        scores[rows[open_pair], :, label[open_pair]] = float("-inf")  # the label is served
    return choice


def exclusive_part_loss(part_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each present label's own part (``distinct_parts``) should tell that label from the
    image's other labels: softmax cross-entropy of V(P_n) over the labels present, the
    target being the part's label. Eq. 1 gives each part one label ("the predicted label
    for the No. n attention part"); MA-CNN trains each part with a softmax classification
    loss. The BCE over parts (the part-label loss) asks only that *some* part shows each
    present label, and one part lit over airplane and apron satisfies it for both
    (airplane80, docs/benchmarks.md); with attended evidence this term is lowered by
    moving the airplane part's map from where V sees pavement to where it sees the
    airplane. Images with one label add nothing. Mean over the present labels of images
    with two or more."""
    choice = distinct_parts(part_logits, targets)                       # [B, C]
    present = targets > 0.5
    served = present & (choice >= 0) & (present.sum(1, keepdim=True) > 1)
    if not served.any():
        return part_logits.sum() * 0.0
    index = choice.clamp(min=0)[..., None].expand(-1, -1, part_logits.shape[-1])
    own = part_logits.gather(1, index)
    own = own.float().masked_fill(~present[:, None, :], -1e4)  # [B, C(label), C]; finite:
    # a row of -inf (an image without labels) would put NaN into the gradient
    log_p = torch.log_softmax(own, dim=-1).diagonal(dim1=1, dim2=2)     # [B, C]
    return -log_p[served].mean()


def grouping_loss(maps: torch.Tensor, weight: float = DIVERSITY_WEIGHT,
                  margin: float = DIVERSITY_MARGIN) -> torch.Tensor:
    """MA-CNN's channel-grouping loss, averaged over images (module docstring)."""
    b, n, h, w = maps.shape
    raw = maps.flatten(2)                                               # [B, N, hw]
    m = raw / raw.sum(-1, keepdim=True).clamp(min=1e-8)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h, device=maps.device),
                            torch.linspace(0, 1, w, device=maps.device), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], -1)              # [hw, 2]
    peak = coords[m.argmax(-1)]                                         # [B, N, 2]
    dist = ((coords[None, None] - peak[:, :, None]) ** 2).sum(-1)       # [B, N, hw]
    compactness = (m * dist).sum(-1)
    if n > 1:
        others = raw[:, None].expand(b, n, n, h * w).masked_fill(
            torch.eye(n, dtype=torch.bool, device=maps.device)[None, :, :, None], 0.0)
        diversity = (raw * (others.amax(2) - margin)).mean(-1)
    else:
        diversity = torch.zeros_like(compactness)
    return (compactness + weight * diversity).mean()


def peak_response_groups(feats: torch.Tensor, parts: int, iterations: int = 25,
                         seed: int = 0) -> torch.Tensor:
    """Cluster channels by where they peak: feats [B, c, h, w] -> group id per channel [c].

    Each channel's descriptor is the (y, x) of its peak on every image (in [0, 1]);
    k-means with k-means++ seeding, deterministic for a given seed."""
    device = feats.device
    feats = feats.detach().float().cpu()  # small; and the generator below is a CPU one
    b, c, h, w = feats.shape
    flat = feats.flatten(2).argmax(-1)                                  # [B, c]
    desc = torch.stack([flat // w / max(h - 1, 1), flat % w / max(w - 1, 1)], -1)
    desc = desc.permute(1, 0, 2).reshape(c, 2 * b)                      # [c, 2B]
    k = min(parts, c)
    g = torch.Generator().manual_seed(seed)
    centres = _kmeans(desc, k, iterations, g)
    return balanced_assignment(torch.cdist(desc, centres), math.ceil(c / k)).to(device)


def balanced_assignment(distances: torch.Tensor, capacity: int) -> torch.Tensor:
    """Each row (channel) to a column (group), nearest first, no group over ``capacity``."""
    c, k = distances.shape
    groups = torch.full((c,), -1, dtype=torch.long)
    load = [0] * k
    for flat in distances.flatten().argsort().tolist():
        channel, group = divmod(flat, k)
        if groups[channel] < 0 and load[group] < capacity:
            groups[channel] = group
            load[group] += 1
    return groups


def _kmeans(desc: torch.Tensor, k: int, iterations: int, g: torch.Generator) -> torch.Tensor:
    """Centres [k, dim] by k-means with k-means++ seeding."""
    c = len(desc)
    centres = desc[torch.randint(0, c, (1,), generator=g)]
    while len(centres) < k:
        d2 = torch.cdist(desc, centres).amin(1) ** 2
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / c)
        centres = torch.cat([centres, desc[torch.multinomial(probs, 1, generator=g)]])
    for _ in range(iterations):
        groups = torch.cdist(desc, centres).argmin(1)
        for i in range(k):
            if (groups == i).any():
                centres[i] = desc[groups == i].mean(0)
    return centres
