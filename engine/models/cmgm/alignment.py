"""GCN label representation (CM-GM Section 3.2) and Cross-Modal Alignment (Section 3.3).

- :class:`LabelGraphEncoder`: H^{l+1} = sigma(D^-1/2 (A + I) D^-1/2 H^l W_G^l) (Eq. 5)
  over the directed graph A_ab = 1 when P(L_b | L_a) >= tau (Eq. 4, tau = 0.4), with
  H^0 the labels' text embeddings from a BERT-family model (the engine's packaged MiniLM,
  384-d; the paper's BERT vectors are 1000-d). Two layers, text dim -> E -> E, ReLU between
  them (none after the last, so embeddings may take either sign). D is the row sum of
  A + I (the graph is directed).
- :class:`CrossModalAlignment`: W2, a linear map of part features into the E-d label space.
- :func:`hinge_rank_loss`: Eq. 6 for every (image, positive label) pair, with the part
  feature assigned to that label: sum over the other labels a of
  max(0, margin - g_label . W2 P_label + g_a . W2 P_label), averaged over the pairs.
  Both sides are L2-normalised, so the margin (0.1, as in DeViSE, the paper's [61]) is a
  difference of cosines and cannot be met by growing the vectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.graph.label_graph import gcn_normalised
from engine.models.gcn import GraphConvolution

MARGIN = 0.1


class LabelGraphEncoder(nn.Module):
    def __init__(self, text_dim: int, embed_dim: int, adjacency: torch.Tensor) -> None:
        super().__init__()
        norm = torch.tensor(gcn_normalised(adjacency.numpy()), dtype=torch.float32)
        self.first = GraphConvolution(text_dim, embed_dim, norm)
        self.second = GraphConvolution(embed_dim, embed_dim, norm)

    def forward(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.second(F.relu(self.first(text_embeddings)))


class CrossModalAlignment(nn.Module):
    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.w2 = nn.Linear(channels, embed_dim)

    def forward(self, part_feats: torch.Tensor) -> torch.Tensor:
        return self.w2(part_feats)


def hinge_rank_loss(aligned: torch.Tensor, label_embeddings: torch.Tensor,
                    targets: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """aligned [B, C, E] (W2 P for each label's part), label_embeddings [C, E] (GCN),
    targets [B, C] 0/1 -> Eq. 6 averaged over positive (image, label) pairs."""
    v = F.normalize(aligned, dim=-1)
    g = F.normalize(label_embeddings, dim=-1)
    scores = torch.einsum("ble,ae->bla", v, g)                  # g_a . W2 P_l
    matched = scores.diagonal(dim1=1, dim2=2)                    # g_l . W2 P_l
    violations = (margin - matched[..., None] + scores).clamp(min=0)
    c = scores.shape[-1]
    violations = violations * (1 - torch.eye(c, device=scores.device))  # a != label
    per_pair = violations.sum(-1)                                # [B, C]
    positives = targets > 0.5
    if not positives.any():
        return scores.sum() * 0.0  # keeps the graph: a batch without labels adds nothing
    return per_pair[positives].mean()
