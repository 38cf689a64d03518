"""Drawing a label graph like the CM-GM paper's Figure 1: labels on a circle, an arrow
L_i -> L_j for each edge of the thresholded graph, width proportional to P(L_j | L_i)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.graph.label_graph import LabelGraph


def draw_label_graph(graph: LabelGraph, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    n = len(graph.labels)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / 2
    xy = np.c_[np.cos(angles), np.sin(angles)]
    fig, ax = plt.subplots(figsize=(9, 9))
    for i, j in zip(*np.nonzero(graph.adjacency)):
        p = graph.probs[i, j]
        ax.add_patch(FancyArrowPatch(xy[i], xy[j], arrowstyle="-|>", mutation_scale=12,
                                     lw=0.5 + 4 * p, color=(0.15, 0.35, 0.65, 0.35 + 0.6 * p),
                                     connectionstyle="arc3,rad=0.12", shrinkA=14, shrinkB=14))
    freq = np.diag(graph.counts) / max(graph.n_images, 1)
    ax.scatter(xy[:, 0], xy[:, 1], s=300 + 2500 * freq, color="#f4a261", zorder=3,
               edgecolor="#6b3e1e")
    for (x, y), label in zip(xy, graph.labels):
        ax.text(x * 1.16, y * 1.16, label, ha="center", va="center", fontsize=10)
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.45, 1.45)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"label graph: edge L_i -> L_j where P(L_j | L_i) >= {graph.tau} "
                 f"({graph.n_images} images)", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
