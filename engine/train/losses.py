"""Multi-label classification losses on logits [B, C] and 0/1 targets [B, C].

- ``bce``: binary cross-entropy, mean over labels and images.
- ``weighted-bce``: BCE with positive weight w_c = n_neg_c / n_pos_c from the training
  labels (clamped to [1, 50]), so rare labels are not ignored.
- ``imbalance-bce``: CMA's class-imbalance weighted BCE (You et al. 2020, Eq. 12):
  w_k = y_k e^{beta (1 - p_k)} + (1 - y_k) e^{beta p_k}, p_k the label's share of the
  training images, beta = 0.4 (the paper's NUS-WIDE value; beta = 0 is plain BCE).
- ``asl``: asymmetric loss (Ridnik et al. 2021, Eq. 1-5): positives
  (1-p)^gamma_pos * log(p), negatives p_m^gamma_neg * log(1-p_m) with the shifted
  probability p_m = max(p - clip, 0); defaults gamma_pos 0, gamma_neg 4, clip 0.05 (the
  paper's), changed with ``AslSettings`` (recipe keys ``asl_gamma_pos``, ``asl_gamma_neg``,
  ``asl_clip``). gamma_neg 0 and clip 0 give plain BCE.

``label_smoothing`` eps (any loss): each known 0/1 target becomes y (1 - eps) + eps / 2, so
a confident wrong label (a "trees" missed by the annotator on a tile with three small
trees) costs less and the model stops pushing logits to the extremes (Szegedy et al. 2016,
Sec. 7, written for the sigmoid of each label); 0 keeps the targets as they are.

Every loss skips unknown labels: a NaN target (weakly labelled data, e.g. the crops of an
object-detection set, engine.data.boxes) adds nothing to the loss or its gradient, and a
mean is taken over the known entries only. With every label known each loss is exactly
its formula above.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import TileLabelError

LOSSES = ("bce", "weighted-bce", "imbalance-bce", "asl")
IMBALANCE_BETA = 0.4
MAX_SMOOTHING = 0.5  # at 0.5 every target would be 0.5: the labels would say nothing
MAX_ASL_CLIP = 0.5   # above it most negatives would cost nothing at any probability


@dataclass(frozen=True)
class AslSettings:
    """The asymmetric loss's focusing exponents and probability margin (Ridnik et al. 2021)."""

    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05

    def check(self) -> None:
        if self.gamma_pos < 0 or self.gamma_neg < 0:
            raise TileLabelError(f"the asymmetric loss's gammas must be 0 or more (0: no "
                                 f"focusing), got asl_gamma_pos {self.gamma_pos}, "
                                 f"asl_gamma_neg {self.gamma_neg}")
        if not 0.0 <= self.clip < MAX_ASL_CLIP:
            raise TileLabelError(f"asl_clip must be in [0, {MAX_ASL_CLIP}) (the paper uses "
                                 f"0.05; 0 turns the margin off), got {self.clip}")


def known(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets with unknown entries set to 0, the 0/1 mask of known entries)."""
    mask = torch.isfinite(targets)
    return torch.where(mask, targets, torch.zeros_like(targets)), mask.to(targets.dtype)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with logits, mean over the known entries (every entry when none is NaN)."""
    targets, mask = known(targets)
    w = mask if weight is None else mask * weight
    total = F.binary_cross_entropy_with_logits(logits, targets, weight=w, pos_weight=pos_weight,
                                               reduction="sum")
    return total / mask.sum().clamp(min=1)


class BCE(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_bce(logits, targets)


class AsymmetricLoss(nn.Module):
    def __init__(self, settings: AslSettings = AslSettings(), eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_pos, self.gamma_neg = settings.gamma_pos, settings.gamma_neg
        self.clip, self.eps = settings.clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets, mask = known(targets)
        p = torch.sigmoid(logits)
        p_m = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = targets * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        neg = (1 - targets) * p_m.pow(self.gamma_neg) * torch.log((1 - p_m).clamp(min=self.eps))
        # sum over labels, mean over images; with unknown labels, scaled to the known share
        per_entry = -(pos + neg) * mask
        return per_entry.sum() * logits.shape[1] / mask.sum().clamp(min=1)


class WeightedBCE(nn.Module):
    def __init__(self, pos_weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_bce(logits, targets, pos_weight=self.pos_weight)


class ImbalanceWeightedBCE(nn.Module):
    def __init__(self, label_ratio: torch.Tensor, beta: float = IMBALANCE_BETA) -> None:
        super().__init__()
        self.register_buffer("label_ratio", label_ratio)
        self.beta = beta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = self.label_ratio
        y, _ = known(targets)
        w = y * torch.exp(self.beta * (1 - p)) + (1 - y) * torch.exp(self.beta * p)
        return masked_bce(logits, targets, weight=w)


class LabelSmoothing(nn.Module):
    """``loss`` against targets pulled towards 0.5 by ``eps`` (unknown ones stay NaN)."""

    def __init__(self, loss: nn.Module, eps: float) -> None:
        super().__init__()
        self.loss, self.eps = loss, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, targets * (1 - self.eps) + self.eps / 2)


def check_smoothing(eps: float) -> None:
    if not 0.0 <= eps < MAX_SMOOTHING:
        raise TileLabelError(f"label smoothing must be in [0, {MAX_SMOOTHING}) (e.g. 0.1: "
                             f"targets 0.05 and 0.95), got {eps}; use 0 to train without it")


def check_loss_settings(name: str, smoothing: float, asl: AslSettings) -> None:
    """Refuse settings a loss cannot take, with the fix (before any training work)."""
    check_smoothing(smoothing)
    asl.check()
    if name != "asl" and asl != AslSettings():
        raise TileLabelError(f"asl_gamma_pos, asl_gamma_neg and asl_clip set the asymmetric "
                             f"loss, but the loss is '{name}'; set loss = \"asl\" or leave "
                             "them out")


def build_loss(name: str, train_targets: np.ndarray, smoothing: float = 0.0,
               asl: AslSettings = AslSettings()) -> nn.Module:
    """The loss ``name``, with label smoothing ``smoothing`` if above 0 and the asymmetric
    loss's settings ``asl``; label frequencies come from ``train_targets`` (complete rows)."""
    check_loss_settings(name, smoothing, asl)
    loss = _plain_loss(name, train_targets, asl)
    return LabelSmoothing(loss, smoothing) if smoothing > 0 else loss


def _plain_loss(name: str, train_targets: np.ndarray, asl: AslSettings) -> nn.Module:
    if name == "bce":
        return BCE()
    if name == "weighted-bce":
        pos = train_targets.sum(0)
        neg = len(train_targets) - pos
        w = np.clip(neg / np.maximum(pos, 1), 1.0, 50.0)
        return WeightedBCE(torch.tensor(w, dtype=torch.float32))
    if name == "imbalance-bce":
        return ImbalanceWeightedBCE(torch.tensor(train_targets.mean(0), dtype=torch.float32))
    if name == "asl":
        return AsymmetricLoss(asl)
    raise ValueError(f"unknown loss '{name}'; choose one of {', '.join(LOSSES)}")


class LossTally:
    """An epoch's mean of each loss term (the main loss and a model's own losses), summed
    as detached tensors so that reading them costs no device sync per step."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._steps += 1

    def means(self) -> dict[str, float]:
        return {name: float(total) / self._steps for name, total in self._sums.items()}

    def total(self) -> float:
        """The mean of the summed loss the optimiser saw (NaN for an epoch of no steps)."""
        return sum(self.means().values()) if self._steps else float("nan")

    def breakdown(self) -> str:
        """' (asl 0.6520 + absent_attention 0.8312)' when there is more than one term."""
        means = self.means()
        if len(means) < 2:
            return ""
        return " (" + " + ".join(f"{name} {value:.4f}" for name, value in means.items()) + ")"
