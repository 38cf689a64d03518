"""Label text embeddings from the packaged MiniLM, offline."""
from __future__ import annotations

import numpy as np

from engine.graph.label_embeddings import embed_labels, label_text


def test_label_names_become_readable_text():
    assert label_text("mobile-home") == "mobile home"
    assert label_text("Transitional woodland/shrub") == "Transitional woodland shrub"


def test_embeddings_are_normalised_and_put_related_labels_close():
    labels = ["water", "sea", "airplane", "Land principally occupied by agriculture, with "
              "significant areas of natural vegetation"]
    e = embed_labels(labels)
    assert e.shape == (4, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2]  # water is nearer sea than airplane
