"""Label graph mining on a small hand-made label table."""
from __future__ import annotations

import numpy as np
import pytest

from engine.graph.label_graph import (LabelGraph, gcn_normalised, label_sequence,
                                      mlgcn_reweighted, thresholded_adjacency)

LABELS = ["water", "ship", "dock", "trees"]
# 5 images: ship always with water; dock with water and ship twice; trees alone once.
TABLE = np.array([[1, 1, 1, 0],
                  [1, 1, 0, 0],
                  [1, 0, 0, 0],
                  [1, 1, 1, 0],
                  [0, 0, 0, 1]])


def test_conditional_probabilities_and_directed_edges():
    g = LabelGraph.mine(LABELS, TABLE, tau=0.4)
    assert g.counts[0, 0] == 4 and g.counts[0, 1] == 3
    assert g.probs[1, 0] == pytest.approx(1.0)    # P(water | ship) = 3/3
    assert g.probs[0, 1] == pytest.approx(0.75)   # P(ship | water) = 3/4
    assert g.probs[0, 2] == pytest.approx(0.5)    # P(dock | water) = 2/4
    assert g.probs[2, 1] == pytest.approx(1.0)    # P(ship | dock) = 2/2
    edges = {(a, b) for a, b, _ in g.edges()}
    assert ("ship", "water") in edges and ("water", "dock") in edges
    assert not any("trees" in e for e in edges)
    g6 = LabelGraph.mine(LABELS, TABLE, tau=0.6)
    assert ("water", "dock") not in {(a, b) for a, b, _ in g6.edges()}  # 0.5 < 0.6


def test_mlgcn_reweighting_rows_sum_to_one():
    a = thresholded_adjacency(LabelGraph.mine(LABELS, TABLE).probs, 0.4)
    r = mlgcn_reweighted(a, p=0.2)
    assert np.allclose(r.sum(1), 1.0)
    assert r[0, 0] == pytest.approx(0.8) and r[3, 3] == pytest.approx(1.0)


def test_gcn_normalisation_is_symmetric_for_symmetric_input():
    a = np.array([[0, 1.0], [1.0, 0]])
    n = gcn_normalised(a)
    assert np.allclose(n, [[0.5, 0.5], [0.5, 0.5]])


def test_label_sequence_starts_at_most_confident_and_follows_probabilities():
    g = LabelGraph.mine(LABELS, TABLE)
    order = label_sequence(np.array([0.2, 0.9, 0.1, 0.05]), g.probs)
    # ship (most confident) -> water (P=1.0) -> dock (P(dock|water)=.5) -> trees
    assert [LABELS[i] for i in order] == ["ship", "water", "dock", "trees"]


def test_graph_round_trips_through_json():
    g = LabelGraph.mine(LABELS, TABLE)
    h = LabelGraph.from_json(g.to_json())
    assert h.labels == LABELS and np.allclose(h.probs, g.probs)

