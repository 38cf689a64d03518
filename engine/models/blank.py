"""Untrained model directories of any architecture, for runtime parity tests and speed
benchmarks: the packaged ImageNet backbone (random for resnet and kbranch, whose weights
are not packaged), new layers from a fixed seed, the label graph mined from the given
targets and random unit label embeddings (no text model needed). Their predictions are
meaningless; their graphs and costs are those of trained models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.band_groups import input_layout
from engine.graph.label_graph import LabelGraph
from engine.models.modelfile import ModelSpec, build_model, save_model
from engine.models.registry import ARCHITECTURES

# (arch, variant) of every architecture, each variant that changes the graph
VARIANTS = [("gap-linear", None), ("resnet", None), ("mlgcn", None), ("cma", None),
            ("ms-cma", None), ("srdl", None), ("deeplift", "agcn"), ("deeplift", "rgcn"),
            ("cmgm", "N-LSTM"), ("cmgm", "N-R-LSTM"), ("cmgm", "N-BiLSTM"),
            ("cmgm", "N-R-BiLSTM"), ("kbranch", None)]
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def blank_model_dir(arch: str, variant: str | None, labels: list[str], targets: np.ndarray,
                   out: Path, px: int = 96, seed: int = 0,
                   extra_config: dict | None = None) -> Path:
    rng = np.random.default_rng(seed)
    if arch == "kbranch":
        px, gsd = 120, 10.0  # a BigEarthNet patch: 1.2 km, groups of 120, 60 and 20 px
        bands, config = input_layout(arch, S2_BANDS, gsd, px, {})
    else:
        bands, gsd = ["red", "green", "blue"], 0.3 * 256 / px
        config = {"backbone": "resnet50" if arch == "resnet" else "efficientnet_lite0"}
    if variant:
        config["variant"] = variant
    config.update(extra_config or {})
    emb = rng.standard_normal((len(labels), 384))
    spec = ModelSpec(model_id=f"{arch}-{variant or 'default'}", arch=arch, labels=labels,
                     bands=bands, gsd_m=gsd, tile_px=px, mean=[0.4] * len(bands),
                     std=[0.2] * len(bands), arch_config=config,
                     label_graph=LabelGraph.mine(labels, targets).to_json(),
                     label_embeddings=(emb / np.linalg.norm(emb, axis=1, keepdims=True)).tolist()
                     if ARCHITECTURES[arch].needs_label_embeddings else None)
    torch.manual_seed(seed)
    model = build_model(spec, pretrained=arch not in ("resnet", "kbranch"))
    return save_model(model, spec, out)
