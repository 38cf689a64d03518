"""Graph convolution layers over the label graph, shared by the graph-based models.

- :class:`GraphConvolution`: Y = h(Â X W) with Â the degree-normalised adjacency
  (Kipf & Welling 2017; Deep-LIFT Eq. 2; ML-GCN).
- :class:`AttentionGraphConvolution`: Y = h([X || G X] W) with G = g(X, A) learned by a
  two-layer MLP over node pairs, restricted to the graph's edges (and self loops), each
  row normalised so that sum_j |G_ij| = 1 (Deep-LIFT Eq. 3). Choice where the paper is
  silent: the pair score is tanh(MLP([x_i || x_j])), so weights may be negative, then
  divided by the row's absolute sum.
- :class:`ResidualGraphBlock`: G_{l+1} = F(G_l) + G_l with F two graph convolutions
  (Deep-LIFT Eq. 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelFileError

LEAKY_SLOPE = 0.2


class GraphConvolution(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, adjacency: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Linear(in_dim, out_dim, bias=False)
        # Derived from model.json's label graph at build time: not stored with the weights.
        self.register_buffer("adjacency", adjacency.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjacency @ self.weight(x)


class AttentionGraphConvolution(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, adjacency: torch.Tensor,
                 hidden: int = 64) -> None:
        super().__init__()
        self.pair_mlp = nn.Sequential(nn.Linear(2 * in_dim, hidden), nn.LeakyReLU(LEAKY_SLOPE),
                                      nn.Linear(hidden, 1))
        self.weight = nn.Linear(2 * in_dim, out_dim, bias=False)
        mask = (adjacency > 0).float()
        mask.fill_diagonal_(1.0)
        self.register_buffer("mask", mask, persistent=False)

    def aggregation(self, x: torch.Tensor) -> torch.Tensor:
        """G [C, C]: learned weights on the graph's edges, rows of absolute sum 1."""
        c = x.shape[0]
        pairs = torch.cat([x[:, None, :].expand(c, c, -1), x[None, :, :].expand(c, c, -1)], -1)
        scores = torch.tanh(self.pair_mlp(pairs).squeeze(-1)) * self.mask
        return scores / scores.abs().sum(1, keepdim=True).clamp(min=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(torch.cat([x, self.aggregation(x) @ x], dim=1))


class ResidualGraphBlock(nn.Module):
    def __init__(self, dim: int, adjacency: torch.Tensor) -> None:
        super().__init__()
        self.first = GraphConvolution(dim, dim, adjacency)
        self.second = GraphConvolution(dim, dim, adjacency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.second(F.leaky_relu(self.first(x), LEAKY_SLOPE))
        return F.leaky_relu(residual + x, LEAKY_SLOPE)


def label_inputs(label_embeddings: list[list[float]] | None, n_labels: int) -> torch.Tensor:
    """The GCN's input node features: the stored label text embeddings.

    Graph models need them (model.json ``label_embeddings``); the trainer computes them
    with the label-embedding module before building such a model.
    """
    if label_embeddings is None:
        raise ModelFileError("this architecture needs label text embeddings, and the model "
                             "description has none (retrain it with 'tilelabel train')")
    x = torch.tensor(label_embeddings, dtype=torch.float32)
    if x.shape[0] != n_labels:
        raise ModelFileError(f"{x.shape[0]} label embeddings for {n_labels} labels")
    return x


def attach_label_embeddings(module: nn.Module, label_embeddings: list[list[float]] | None,
                            n_labels: int) -> None:
    """Give ``module`` a ``label_embeddings`` buffer [C, d] from model.json. Not persistent:
    it comes with the model description, so the weights file does not repeat it."""
    module.register_buffer("label_embeddings", label_inputs(label_embeddings, n_labels),
                           persistent=False)


def label_adjacency(label_graph: dict | None, n_labels: int, tau: float) -> torch.Tensor:
    """0/1 directed adjacency P(Lj|Li) >= tau from the stored label graph (no self loops)."""
    from engine.graph.label_graph import LabelGraph, thresholded_adjacency

    if label_graph is None:
        raise ModelFileError("this architecture needs the label graph, and the model "
                             "description has none (retrain it with 'tilelabel train')")
    graph = LabelGraph.from_json(label_graph)
    if len(graph.labels) != n_labels:
        raise ModelFileError(f"the label graph has {len(graph.labels)} labels, the model {n_labels}")
    return torch.tensor(thresholded_adjacency(graph.probs, tau), dtype=torch.float32)
