"""K-Branch CNN-RNN with patch-based multi-attention (Sumbul & Demir 2019,
shared/papers/kbranch-cnn-rnn_sumbul2019...).

Input: a dict group name -> [B, n_bands, px, px], each Sentinel-2 resolution group at its
native pixel size (10 m: 120 px, 20 m: 60 px, 60 m: 20 px for a BigEarthNet patch); no
band is resampled to another's grid (engine/data/band_groups.py says how model.json
declares the groups).

- Patches (Sec. 2.1): each group is cut into R non-overlapping patches on a sqrt(R) x
  sqrt(R) grid (R = 16: 4 x 4), the same ground for every group; patch r of group k is
  rho^r_k.
- K-Branch CNN (Sec. 2.1, Fig. 2, Sec. 3): branch phi^k per resolution, shared by the
  patches: convolutions with stride 1 and zero ("same") padding, 32 filters first, then
  x2 and back /2, ending with 64 (here 32, 64, 128, 64); 10 m: 5x5 kernels for the first
  two layers, 3x3 after; 20 m: 3x3; 60 m: 2x2; 2x2 max pooling after the first two
  layers of the 10 m and 20 m branches, none in the 60 m branch; one FC layer per branch.
  The branch descriptors of a patch are concatenated and a second FC layer gives the
  local descriptor psi_r.
- Bi-LSTM (Eq. 1-2): two LSTMs with 128 hidden units run forwards and backwards over
  the patch sequence (row-major order on the patch grid); phi_r = [h_{r|r-1}; h_{r|r+1}].
- Patch-based multi-attention (Eq. 3): A = softmax(W_a2 tanh(W_a1 Omega)), Omega's
  columns the phi_r, W_a1 [d_a x 2H] and W_a2 [T x d_a] without bias, softmax over the
  R patches, so each of the T rows of A is a distribution over patches.
- Classification (Sec. 2.3-2.4): Psi = max(0, A Omega^T) (the "max non-linearity",
  element-wise), logits z = W_c vec(Psi) + b, P(l|x) = sigmoid(z); trained with binary
  cross-entropy (the trainer's default loss).

Choices where the paper is vague: batch normalisation after each convolution and ReLU
after convolutions and FC layers; branch FC and psi 128 wide; d_a = 128 and T = 8
attention rows; pooling with ceil_mode so tiny patches never vanish; every weight
Xavier-uniform, biases zero (Sec. 3: "all parameters initialized with Xavier"). The
20 m branch takes every 20 m band (B05-B07, B8A, B11, B12) as the issue asks; the
paper's Sec. 3 lists only B05-B07 and B8A. Branches exist for the resolutions present in
the training data (``--variant 20m+60m`` trains one for rasters without 10 m bands).

Attention for the analyst, per label c on the patch grid: the rows of A mixed by how
much label c's score draws on each row, pi_ct proportional to max(0, sum_j W_c[t, j]
Psi[t, j]) (uniform when no row speaks for c), a_c = sum_t pi_ct A_t (sums to 1 over
the R patches), shown as (1 - exp(-R a_c)) times the label's probability: a fixed curve,
the same for every tile and label (engine/models/attention.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelFileError, TileLabelError
from engine.models.attention import distribution_to_unit, presence_weighted
from engine.models.output import ModelOutput

PATCHES = 16
CHANNELS = (32, 64, 128, 64)
BRANCH_DIM = DESCRIPTOR_DIM = 128
LSTM_HIDDEN = 128
ATTENTION_DIM = 128
ATTENTION_ROWS = 8


@dataclass(frozen=True)
class BranchRegime:
    """Kernel size per convolution and how many leading layers are followed by max pooling."""

    kernels: tuple[int, ...]
    pooled_layers: int


# Sec. 3: kernels and pooling per Sentinel-2 resolution (m).
REGIMES = {10: BranchRegime((5, 5, 3, 3), 2), 20: BranchRegime((3, 3, 3, 3), 2),
           60: BranchRegime((2, 2, 2, 2), 0)}


@dataclass(frozen=True)
class BranchInput:
    """One resolution group: its name, ground resolution, band count and tile side in px."""

    name: str
    gsd_m: float
    n_bands: int
    px: int


@dataclass
class KBranchConfig:
    n_labels: int
    groups: list[BranchInput]
    patches: int = PATCHES
    channels: tuple[int, ...] = CHANNELS
    branch_dim: int = BRANCH_DIM
    descriptor_dim: int = DESCRIPTOR_DIM
    lstm_hidden: int = LSTM_HIDDEN
    attention_dim: int = ATTENTION_DIM
    attention_rows: int = ATTENTION_ROWS

    @property
    def grid(self) -> int:
        return math.isqrt(self.patches)

    def validate(self) -> None:
        if self.grid ** 2 != self.patches:
            raise ModelFileError(f"K-Branch needs a square number of patches (4, 9, 16, ...); "
                                 f"got R = {self.patches}")
        if not self.groups:
            raise ModelFileError("K-Branch needs at least one band group")
        for g in self.groups:
            if round(g.gsd_m) not in REGIMES:
                raise ModelFileError(f"K-Branch has branches for 10, 20 and 60 m bands, not "
                                     f"{g.gsd_m:g} m (group {g.name})")
            if g.px % self.grid:
                raise ModelFileError(f"group {g.name}: a tile of {g.px} px does not split into "
                                     f"{self.grid} x {self.grid} equal patches; choose a tile "
                                     f"size that does, or another number of patches")
        if len(self.channels) != len(REGIMES[10].kernels):
            raise ModelFileError(f"K-Branch needs {len(REGIMES[10].kernels)} channel widths")


class SameConv2d(nn.Conv2d):
    """Stride-1 convolution with zero padding that keeps the size, even kernels included
    (the extra row/column of padding goes to the bottom/right)."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__(c_in, c_out, k, stride=1, padding=0, bias=False)
        lead = (k - 1) // 2
        self.pads = (lead, k - 1 - lead, lead, k - 1 - lead)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


class Branch(nn.Module):
    """phi^k: convolutions (+BN, ReLU, max pooling per regime) and one FC layer (Sec. 2.1)."""

    def __init__(self, n_bands: int, patch_px: int, regime: BranchRegime,
                 channels: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = n_bands, patch_px
        for i, (k, c_out) in enumerate(zip(regime.kernels, channels)):
            layers += [SameConv2d(c_in, c_out, k),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i < regime.pooled_layers:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                side = math.ceil(side / 2)
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * side * side, out_dim)
        self.patch_px = patch_px

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.convs(patches).flatten(1)))


def to_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, n, px, px] -> [B * R, n, px/grid, px/grid], patches in row-major order."""
    b, n, h, w = x.shape
    p = h // grid
    x = x.reshape(b, n, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * grid * grid, n, p, p)


class KBranch(nn.Module):
    def __init__(self, cfg: KBranchConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.branches = nn.ModuleDict({
            g.name: Branch(g.n_bands, g.px // cfg.grid, REGIMES[round(g.gsd_m)], cfg.channels,
                           cfg.branch_dim) for g in cfg.groups})
        self.fuse = nn.Linear(cfg.branch_dim * len(cfg.groups), cfg.descriptor_dim)
        self.rnn = nn.LSTM(cfg.descriptor_dim, cfg.lstm_hidden, batch_first=True,
                           bidirectional=True)
        width = 2 * cfg.lstm_hidden
        self.w_a1 = nn.Linear(width, cfg.attention_dim, bias=False)
        self.w_a2 = nn.Linear(cfg.attention_dim, cfg.attention_rows, bias=False)
        self.classifier = nn.Linear(cfg.attention_rows * width, cfg.n_labels)
        self._init_xavier()

    def _init_xavier(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias") or "bias_" in name:
                nn.init.zeros_(p)

    def _check_input(self, x: dict[str, torch.Tensor]) -> None:
        if not isinstance(x, dict):
            raise TileLabelError("K-Branch takes a dict of band groups at their native sizes "
                                 f"({', '.join(g.name for g in self.cfg.groups)}), not one "
                                 "stacked tensor")
        for g in self.cfg.groups:
            t = x.get(g.name)
            if t is None or tuple(t.shape[1:]) != (g.n_bands, g.px, g.px):
                got = "nothing" if t is None else f"shape {tuple(t.shape[1:])}"
                raise TileLabelError(f"K-Branch group {g.name} needs [{g.n_bands}, {g.px}, "
                                     f"{g.px}] per tile (native {g.gsd_m:g} m pixels), got {got}")

    def local_descriptors(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """psi [B, R, d]: branch descriptors of each patch, concatenated, fused by FC."""
        b = next(iter(x.values())).shape[0]
        parts = [self.branches[g.name](to_patches(x[g.name], self.cfg.grid))
                 for g in self.cfg.groups]
        psi = F.relu(self.fuse(torch.cat(parts, dim=1)))
        return psi.reshape(b, self.cfg.patches, -1)

    def forward(self, x: dict[str, torch.Tensor]) -> ModelOutput:
        self._check_input(x)
        omega, _ = self.rnn(self.local_descriptors(x))               # Eq. 1-2: [B, R, 2H]
        scores = self.w_a2(torch.tanh(self.w_a1(omega)))             # [B, R, T]
        a = torch.softmax(scores, dim=1).transpose(1, 2)             # Eq. 3: A [B, T, R]
        psi = F.relu(a @ omega)                                      # Psi = max(0, A Omega^T)
        logits = self.classifier(psi.flatten(1))
        return ModelOutput(logits, self.label_attention(a, psi),
                           {"patch_attention": a, "descriptors": omega})

    def label_attention(self, a: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """[B, C, g, g] in [0, 1]: rows of A weighted by their share in each label's score
        (a distribution over the R patches), brought to [0, 1] by the fixed curve
        1 - exp(-R a) and weighted by the label's probability (engine/models/attention.py)."""
        w = self.classifier.weight.reshape(self.cfg.n_labels, self.cfg.attention_rows, -1)
        share = F.relu(torch.einsum("ctj,btj->bct", w, psi))         # [B, C, T]
        total = share.sum(dim=2, keepdim=True)
        uniform = torch.full_like(share, 1.0 / self.cfg.attention_rows)
        pi = torch.where(total > 0, share / total.clamp(min=1e-12), uniform)
        att = distribution_to_unit(pi @ a, dim=2)                    # [B, C, R], fixed curve
        g = self.cfg.grid
        maps = att.reshape(att.shape[0], self.cfg.n_labels, g, g)
        return presence_weighted(maps, self.classifier(psi.flatten(1)))
