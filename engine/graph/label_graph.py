"""Label co-occurrence graphs mined from a multi-label table.

With N_i the number of images holding label i and M_ij the number holding both i and j:

- conditional probability  P_ij = P(L_j | L_i) = M_ij / N_i  (row i: given label i);
- directed adjacency       A_ij = 1 if P_ij >= tau and i != j  (CM-GM: tau = 0.4,
  "an edge from L_i to L_j when L_j often appears with L_i");
- ML-GCN re-weighting      A'_ij = p * A_ij / sum_{k != i} A_ik for i != j, A'_ii = 1 - p
  (Chen et al. 2019, Eq. 8; rows without neighbours keep A'_ii = 1);
- symmetric form           S = max(P, P^T) with unit diagonal (an undirected similarity);
- GCN normalisation        D^-1/2 (A + I) D^-1/2 (Kipf & Welling 2017).

A label sequence (for sequence predictors) starts from the most confident label and
repeatedly moves to the not-yet-visited label with the highest P(L_next | L_current),
ties broken by confidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CMGM_TAU = 0.4
MLGCN_P = 0.2


def cooccurrence(targets: np.ndarray) -> np.ndarray:
    """M [C, C]: M_ij images holding labels i and j; the diagonal holds N_i."""
    t = np.asarray(targets, dtype=np.int64)
    return t.T @ t


def conditional_probabilities(counts: np.ndarray) -> np.ndarray:
    """P [C, C] with P_ij = P(L_j | L_i) = M_ij / N_i (0 for labels never seen)."""
    n = np.diag(counts).astype(float)
    return np.divide(counts, n[:, None], out=np.zeros(counts.shape), where=n[:, None] > 0)


def thresholded_adjacency(probs: np.ndarray, tau: float = CMGM_TAU) -> np.ndarray:
    """Directed 0/1 adjacency: an edge i -> j where P(L_j | L_i) >= tau, no self-loops."""
    a = (probs >= tau).astype(float)
    np.fill_diagonal(a, 0.0)
    return a


def mlgcn_reweighted(adjacency: np.ndarray, p: float = MLGCN_P) -> np.ndarray:
    """ML-GCN's re-weighted adjacency (module docstring)."""
    a = adjacency.astype(float).copy()
    np.fill_diagonal(a, 0.0)
    rows = a.sum(1, keepdims=True)
    out = np.divide(p * a, rows, out=np.zeros_like(a), where=rows > 0)
    np.fill_diagonal(out, np.where(rows[:, 0] > 0, 1 - p, 1.0))
    return out


def symmetric_similarity(probs: np.ndarray) -> np.ndarray:
    """Undirected similarity S = max(P, P^T), unit diagonal."""
    s = np.maximum(probs, probs.T)
    np.fill_diagonal(s, 1.0)
    return s


def gcn_normalised(adjacency: np.ndarray) -> np.ndarray:
    """D^-1/2 (A + I) D^-1/2."""
    a = adjacency + np.eye(len(adjacency))
    d = 1.0 / np.sqrt(a.sum(1))
    return a * d[:, None] * d[None, :]


def label_sequence(confidences: np.ndarray, probs: np.ndarray,
                   length: int | None = None) -> list[int]:
    """Label order: most confident first, then greedily by P(L_next | L_current)."""
    c = np.asarray(confidences, float)
    n = len(c) if length is None else min(length, len(c))
    order = [int(np.argmax(c))]
    visited = np.zeros(len(c), bool)
    visited[order[0]] = True
    while len(order) < n:
        row = np.where(visited, -np.inf, probs[order[-1]])
        best = np.flatnonzero(row == row.max())
        nxt = int(best[np.argmax(c[best])])
        order.append(nxt)
        visited[nxt] = True
    return order


@dataclass
class LabelGraph:
    """Everything mined from one label table, JSON-serialisable (stored in model.json)."""

    labels: list[str]
    counts: np.ndarray
    probs: np.ndarray
    tau: float
    n_images: int

    @classmethod
    def mine(cls, labels: list[str], targets: np.ndarray, tau: float = CMGM_TAU) -> "LabelGraph":
        counts = cooccurrence(targets)
        return cls(list(labels), counts, conditional_probabilities(counts), tau, len(targets))

    @property
    def adjacency(self) -> np.ndarray:
        return thresholded_adjacency(self.probs, self.tau)

    def edges(self) -> list[tuple[str, str, float]]:
        a = self.adjacency
        return [(self.labels[i], self.labels[j], float(self.probs[i, j]))
                for i, j in zip(*np.nonzero(a))]

    def to_json(self) -> dict:
        return {"labels": self.labels, "tau": self.tau, "n_images": self.n_images,
                "counts": self.counts.tolist(), "conditional_probabilities":
                np.round(self.probs, 6).tolist(),
                "edges": [{"from": a, "to": b, "p": round(p, 6)} for a, b, p in self.edges()]}

    @classmethod
    def from_json(cls, doc: dict) -> "LabelGraph":
        return cls(doc["labels"], np.asarray(doc["counts"]),
                   np.asarray(doc["conditional_probabilities"]), doc["tau"], doc["n_images"])
