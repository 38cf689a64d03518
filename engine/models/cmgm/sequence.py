"""Label sequences and the (Bi-)LSTM credible-label predictor (CM-GM Section 3.4).

- :func:`label_sequences`: per image, start from the most confident label, then move to
  the not-yet-visited label with the highest P(L_next | L_current) (ties broken by
  confidence); the batched form of ``engine.graph.label_graph.label_sequence``.
- :class:`PeepholeLSTM`: Eq. 10-14 as written, with the cell-state ("peephole") terms in
  the gates; the peephole weights are diagonal (one weight per unit), as in Graves' LSTM.
- :class:`SequencePredictor`: runs the aligned label-level features P'_n (Eq. 15) through
  the LSTM in sequence order, forward only or both ways with the two hidden states
  concatenated (Bi-LSTM, Eq. 16). Each step n scores its own label: the hidden state is
  mapped into the label-embedding space and compared with that label's GCN embedding
  (cosine, learned scale, plus a per-label bias): "label vectors determined by mapping".
- :func:`credible_scores`: the test-time rule. Labels the classifier scores above the
  credible threshold (0.4) are positive; a label the classifier predicts with less
  confidence (above the candidate threshold, 0.2 by default: the paper does not give this
  lower value) is positive only when the LSTM also predicts it (p_lstm >= 0.5); any other
  label is negative. The rule is encoded as one probability per label, >= 0.5 exactly for
  the positives; credible labels rank above confirmed candidates, and the negatives are
  ordered mostly by the classifier (so ranking metrics such as mAP see its order):
    credible:              0.75 + 0.25 (p_cnn - t_c) / (1 - t_c)             in (0.75, 1]
    candidate, confirmed:  0.5 + 0.125 ((p_cnn - t_p) / (t_c - t_p)
                                        + (p_lstm - 0.5) / 0.5)             in [0.5, 0.75]
    any other label:       0.5 (p_cnn / t_c) (0.5 + 0.5 p_lstm)              < 0.5
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CREDIBLE = 0.4
CANDIDATE = 0.2
LSTM_POSITIVE = 0.5
SCORE_SCALE = 10.0


@torch.no_grad()
def label_sequences(confidences: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """confidences [B, C], probs [C, C] (P_ij = P(L_j|L_i)) -> label order [B, C]."""
    b, c = confidences.shape
    conf = confidences.float()
    # P(next | current) decides; the confidence only breaks ties (it is < 1, and P
    # values are compared on a 1e6 grid, so it cannot outweigh a real difference).
    keys = torch.round(probs.float() * 1e6)
    order = torch.empty(b, c, dtype=torch.long, device=confidences.device)
    visited = torch.zeros(b, c, dtype=torch.bool, device=confidences.device)
    current = conf.argmax(1)
    rows = torch.arange(b, device=confidences.device)
    for step in range(c):
        order[:, step] = current
        visited[rows, current] = True
        if step == c - 1:
            break
        score = (keys[current] + conf.clamp(0, 1) * 0.5).masked_fill(visited, -float("inf"))
        current = score.argmax(1)
    return order


class PeepholeLSTM(nn.Module):
    """One direction of Eq. 10-14: x [B, T, D] -> hidden states [B, T, H]."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input = nn.Linear(in_dim, 4 * hidden)               # W_p{i,f,o,c} P'_n + b
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)  # W_h{i,f,o,c} h_{n-1}
        self.peephole = nn.Parameter(torch.zeros(3, hidden))     # W_c{i,f,o} c_{n-1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        projected = self.input(x)
        h = x.new_zeros(b, self.hidden)
        c = x.new_zeros(b, self.hidden)
        outputs = []
        for n in range(t):
            zi, zf, zo, zc = (projected[:, n] + self.recurrent(h)).chunk(4, dim=-1)
            i = torch.sigmoid(zi + self.peephole[0] * c)         # Eq. 10
            f = torch.sigmoid(zf + self.peephole[1] * c)         # Eq. 11
            o = torch.sigmoid(zo + self.peephole[2] * c)         # Eq. 12 (c_{n-1}, as written)
            c = f * c + i * torch.tanh(zc)                       # Eq. 13
            h = o * torch.tanh(c)                                # Eq. 14
            outputs.append(h)
        return torch.stack(outputs, 1)


class SequencePredictor(nn.Module):
    """LSTM or Bi-LSTM over label-level features in label-sequence order."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, n_labels: int,
                 bidirectional: bool) -> None:
        super().__init__()
        self.forward_lstm = PeepholeLSTM(in_dim, hidden)
        self.backward_lstm = PeepholeLSTM(in_dim, hidden) if bidirectional else None
        self.to_label_space = nn.Linear(hidden * (2 if bidirectional else 1), embed_dim)
        self.scale = nn.Parameter(torch.tensor(SCORE_SCALE))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, label_feats: torch.Tensor, order: torch.Tensor,
                label_embeddings: torch.Tensor) -> torch.Tensor:
        """label_feats [B, C, D] (by label), order [B, C] -> LSTM logits [B, C] (by label)."""
        seq = label_feats.gather(1, order[..., None].expand_as(label_feats))
        h = self.forward_lstm(seq)
        if self.backward_lstm is not None:                       # Eq. 16
            h = torch.cat([h, self.backward_lstm(seq.flip(1)).flip(1)], dim=-1)
        e = F.normalize(self.to_label_space(h), dim=-1)
        g = F.normalize(label_embeddings, dim=-1)[order]         # [B, C, E], in order
        step_logits = self.scale * (e * g).sum(-1) + self.bias[order]
        return torch.empty_like(step_logits).scatter_(1, order, step_logits)


def credible_scores(p_cnn: torch.Tensor, p_lstm: torch.Tensor, credible: float = CREDIBLE,
                    candidate: float = CANDIDATE) -> torch.Tensor:
    """The credible-label rule as probabilities (module docstring)."""
    credible_q = 0.75 + 0.25 * (p_cnn - credible) / (1 - credible)
    confirmed_q = 0.5 + 0.125 * ((p_cnn - candidate) / (credible - candidate)
                                 + (p_lstm - LSTM_POSITIVE) / (1 - LSTM_POSITIVE))
    other_q = 0.5 * (p_cnn / credible).clamp(0, 1) * (0.5 + 0.5 * p_lstm.clamp(0, 0.999))
    confirmed = (p_cnn > candidate) & (p_lstm >= LSTM_POSITIVE)
    return torch.where(p_cnn > credible, credible_q, torch.where(confirmed, confirmed_q, other_q))
