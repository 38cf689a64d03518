"""Dataset-level multi-label metrics.

Inputs: ``scores`` [N, C] probabilities, ``targets`` [N, C] 0/1, ``thresholds`` [C]
(0.5 unless a model's calibrated thresholds are given). With ``pred = scores >= t``:

- OP, OR, OF1 (overall / micro): precision and recall over all N*C decisions pooled,
  OF1 = 2*OP*OR/(OP+OR); OF1 is the CM-GM paper's MiF1.
- CP, CR, CF1 (per class, then averaged): CP = mean_c P_c, CR = mean_c R_c,
  CF1 = 2*CP*CR/(CP+CR) (the CM-GM paper's MaF1); F1_macro = mean_c F1_c.
  A class with no positive prediction has P_c = 0; with no positive target, R_c = 0.
- EP, ER, EF1 (example based): precision/recall per image, averaged over images;
  EF1 = mean over images of 2|Y∩P| / (|Y|+|P|) (1 when both are empty).
- top-3 variants (``top3``): OP/OR/OF1 and CP/CR/CF1 when each image's prediction is
  its 3 highest-scoring labels (the ML-GCN convention), whatever the thresholds.
- calibrated thresholds (``calibrate_thresholds``): per label, the threshold on a grid
  0.05-0.95 that maximises that label's F1 on the given (validation) scores (ties go to
  the threshold nearest 0.5), then moved halfway (``SHRINK``) back to the model's common
  threshold (``common_threshold``: the one threshold for every label with the best OF1);
  a label with fewer than 5 positives keeps its threshold (a new model's: the common one).
  Why halfway: with 252 validation images the F1-best value is partly noise; chosen on
  validation halves alone, the halfway rule beat the F1-best value on OF1 for all 8
  models tried and matched it on CF1, and it carried over to the test split. Why towards
  the common threshold and not 0.5 (the rule until 2026-12-07): a loss that lifts every
  probability (the asymmetric loss) moves the whole model's operating point, and pulling
  each label back to 0.5 then costs OF1 and CF1 (benchmarks/threshold_rules.py,
  docs/benchmarks.md).
- mAP_macro: mean over classes with at least one positive of the average precision
  (area under the precision-recall step curve, as sklearn's average_precision_score);
  mAP_micro: the AP of all N*C scores pooled.
"""
from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP = sum_k (R_k - R_{k-1}) P_k over score-sorted predictions (ties grouped)."""
    targets = targets.astype(bool)
    n_pos = int(targets.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], targets[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def _decision_metrics(pred: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    tp = (pred & targets).sum(0)
    n_pred, n_true = pred.sum(0), targets.sum(0)
    p_c, r_c = _div(tp, n_pred), _div(tp, n_true)
    op, orr = float(_div(tp.sum(), n_pred.sum())), float(_div(tp.sum(), n_true.sum()))
    cp, cr = float(p_c.mean()), float(r_c.mean())
    return {"OP": op, "OR": orr, "OF1": float(_div(2 * op * orr, op + orr)),
            "CP": cp, "CR": cr, "CF1": float(_div(2 * cp * cr, cp + cr))}


def top_k_predictions(scores: np.ndarray, k: int = 3) -> np.ndarray:
    pred = np.zeros(scores.shape, bool)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.put_along_axis(pred, top, True, axis=1)
    return pred


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray,
                       thresholds: np.ndarray | None = None,
                       labels: list[str] | None = None) -> dict:
    """All metrics of the module docstring, plus ``per_class`` and ``n_images``."""
    scores, targets = np.asarray(scores, float), np.asarray(targets).astype(bool)
    n, c = scores.shape
    t = np.full(c, 0.5) if thresholds is None else np.asarray(thresholds, float)
    pred = scores >= t
    tp = (pred & targets).sum(0)
    n_pred, n_true = pred.sum(0), targets.sum(0)
    p_c, r_c = _div(tp, n_pred), _div(tp, n_true)
    f1_c = _div(2 * p_c * r_c, p_c + r_c)
    inter = (pred & targets).sum(1)
    ep = float(_div(inter, pred.sum(1)).mean())
    er = float(_div(inter, targets.sum(1)).mean())
    denom = pred.sum(1) + targets.sum(1)
    ef1 = float(np.where(denom == 0, 1.0, _div(2 * inter, denom)).mean())
    ap_c = np.array([average_precision(scores[:, j], targets[:, j]) for j in range(c)])
    names = labels or [str(j) for j in range(c)]
    return {
        "n_images": int(n),
        "mAP_macro": float(np.nanmean(ap_c)) if np.isfinite(ap_c).any() else float("nan"),
        "mAP_micro": average_precision(scores.ravel(), targets.ravel()),
        **_decision_metrics(pred, targets),
        "F1_macro": float(f1_c.mean()), "EP": ep, "ER": er, "EF1": ef1,
        "top3": _decision_metrics(top_k_predictions(scores, min(3, c)), targets),
        "per_class": {names[j]: {"AP": None if np.isnan(ap_c[j]) else float(ap_c[j]),
                                 "P": float(p_c[j]), "R": float(r_c[j]), "F1": float(f1_c[j]),
                                 "support": int(n_true[j])} for j in range(c)},
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


MIN_POSITIVES = 5  # fewer validation positives than this: a label keeps its threshold
SHRINK = 0.5       # how far the F1-best threshold moves back towards the common one


def best_on_grid(f1: np.ndarray) -> float:
    """The grid threshold with the highest F1; ties go to the one nearest 0.5."""
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(THRESHOLD_GRID[best[np.argmin(abs(THRESHOLD_GRID[best] - 0.5))]])


def common_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """The one grid threshold for every label that maximises OF1 on these scores: the
    model's operating point (near 0.5 under BCE, higher under the asymmetric loss)."""
    scores, targets = np.asarray(scores, float), np.asarray(targets).astype(bool)
    pred = scores[None] >= THRESHOLD_GRID[:, None, None]                  # [T, N, C]
    tp = (pred & targets).sum((1, 2))
    return best_on_grid(_div(2 * tp, pred.sum((1, 2)) + targets.sum()))


def calibrate_thresholds(scores: np.ndarray, targets: np.ndarray,
                         current: list[float] | None = None,
                         shrink: float = SHRINK, towards: float | None = None) -> list[float]:
    """Per-label decision thresholds: each label's F1-best value moved ``shrink`` of the way
    back to ``towards`` (default: the model's ``common_threshold`` on these scores; module
    docstring); a label with fewer than MIN_POSITIVES validation positives keeps
    ``current`` (a new model, None: the common threshold)."""
    scores, targets = np.asarray(scores, float), np.asarray(targets).astype(bool)
    anchor = common_threshold(scores, targets) if towards is None else towards
    current = list(current) if current is not None else [anchor] * scores.shape[1]
    chosen = []
    for c in range(scores.shape[1]):
        if targets[:, c].sum() < MIN_POSITIVES:
            chosen.append(float(current[c]))
            continue
        pred = scores[:, c][None, :] >= THRESHOLD_GRID[:, None]          # [T, N]
        tp = (pred & targets[:, c]).sum(1)
        f1_best = best_on_grid(_div(2 * tp, pred.sum(1) + targets[:, c].sum()))
        chosen.append(round(f1_best + shrink * (anchor - f1_best), 4))
    return chosen
