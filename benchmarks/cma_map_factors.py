"""Which factor of a CMA / MS-CMA overlay puts it on the object: the pointing game played
with each factor of the map alone.

The CMA head's overlay (engine/models/cma.py) is the product of two factors per location
i and label k: the category attention a_k^i of Eq. 8 through the fixed curve
1 - exp(-M a) (engine/models/attention.py), and the logit location i alone would give,
sigmoid(w_k^T I^i + b_k) (Eq. 9-10). For each trained model this script replaces the map
the head returns, for the run only (the weights and the probabilities stay), by

- ``product``: the overlay as shipped;
- ``attention``: the attention factor alone;
- ``location``: the location's logit alone,

and plays benchmarks/attention_localisation.py's pointing game on the same NWPU VHR-10 and
DOTA crops (same seeds): pointing, and the same game with the map of a label absent from
the crop. A factor whose absent-label map peaks on the crop's object is the one that
narrows the overlay's margin.

Usage: python benchmarks/cma_map_factors.py MODEL_DIR [MODEL_DIR ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from attention_localisation import (SHARED, dota_boxes, make_crops, nwpu_boxes, pointing,
                                    trained_nwpu_images)

from engine.models import cma
from engine.models.attention import distribution_to_unit
from engine.models.spec import read_spec

FACTORS = ("product", "attention", "location")
_shipped_forward = cma.CrossModalityHead.forward


def factor_forward(factor: str):
    """CrossModalityHead.forward returning one factor of the map instead of the overlay."""
    def forward(self: cma.CrossModalityHead, feats: torch.Tensor,
                embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, overlay, attention_path = _shipped_forward(self, feats, embeddings)
        if factor == "product":
            return logits, overlay, attention_path
        i = self.reduce(feats)
        m = (distribution_to_unit(self.attention(i, embeddings), -1) if factor == "attention"
             else torch.sigmoid(self.location_logits(i)))
        return logits, m.reshape(overlay.shape), attention_path
    return forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    args = ap.parse_args()
    nwpu = nwpu_boxes(SHARED / "nwpu-vhr10", trained_nwpu_images(args.models))
    print("| model | map | NWPU pointing | absent-label map | pointing - absent | "
          "DOTA pointing | DOTA absent | per NWPU label: pointing / absent |")
    print("|---|---|---|---|---|---|---|---|")
    for model_dir in args.models:
        size = read_spec(model_dir).tile_px
        rng = np.random.default_rng(0)            # the crops attention_localisation.py cuts
        sets = {"NWPU": make_crops(nwpu, size, rng, 3, 1.0),
                "DOTA": make_crops(dota_boxes(SHARED / "dota-samples"), size, rng, 40, 1.0)}
        for factor in FACTORS:
            cma.CrossModalityHead.forward = factor_forward(factor)
            rows = {name: pointing(model_dir, crops, np.random.default_rng(1))["rows"]
                    for name, crops in sets.items()}
            n, d = rows["NWPU"]["all"], rows["DOTA"]["all"]
            labels = " ".join(f"{label} {row[0]:.2f} / {row[2]:.2f}"
                              for label, row in rows["NWPU"].items() if label != "all")
            print(f"| {model_dir.name} | {factor} | {n[0]:.2f} | {n[2]:.2f} | "
                  f"{n[0] - n[2]:+.2f} | {d[0]:.2f} | {d[2]:.2f} | {labels} |", flush=True)
    cma.CrossModalityHead.forward = _shipped_forward


if __name__ == "__main__":
    main()
