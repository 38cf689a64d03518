"""How much real data must an edge tile hold for its labels to mean something?

A raster is rarely a whole number of tiles wide: annotate pads the tiles that reach past
its right and bottom edges with the model's mean (engine/infer/tile_reader.py) and
predicts them. This benchmark shows the model such tiles: each UC Merced test image with
only its left share f of columns kept and the rest padded exactly as the tile reader pads,
for several f, and measures what it then says against the whole image's annotation. A
label the whole image lacks cannot be in a part of it, so a label said there is made up
by the padding: precision against the whole image's labels measures the padding's harm
(recall falls by itself as the image shrinks). The share from which predictions hold up
is annotate's ``MIN_VALID_FRACTION``.

Usage: python benchmarks/partial_tiles.py [MODEL_DIR] [--dataset ucmerced:...]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.band_groups import band_groups
from engine.data.datasets import open_dataset
from engine.defaults import DEFAULT_MODEL
from engine.device import resolve_device
from engine.infer.predictor import Predictor
from engine.metrics import multilabel_metrics
from engine.models.modelfile import load_model
from engine.train.loader import TrainingView
from score_cache import UCM

SHARES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.10, 0.05, 0.02)


def kept_left(x: torch.Tensor, share: float) -> torch.Tensor:
    """The tiles with only their left ``share`` of columns; the rest holds the model's
    mean, which is 0 once normalised, as the tile reader pads."""
    out = x.clone()
    out[..., max(1, round(share * x.shape[-1])):] = 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--dataset", default=UCM)
    args = ap.parse_args()
    model, spec = load_model(args.model)
    predictor = Predictor(model, spec, resolve_device("auto"))
    dataset = open_dataset(args.dataset, bands=spec.bands)
    samples = dataset.split("test", spec.training.get("split_seed", 0))
    view = TrainingView([(dataset, s) for s in samples], spec.bands, spec.tile_px, spec.mean,
                        spec.std, train=False, groups=band_groups(spec.arch_config))
    images = torch.cat([x for x, _, _ in DataLoader(view, batch_size=32)])
    targets = dataset.targets(samples)
    thresholds = np.asarray(spec.label_thresholds())
    print(f"{spec.model_id}, {len(samples)} UC Merced test images, the left share of each kept\n")
    print("| share of the tile kept | labels said a tile | precision OP / CP | tiles with a "
          "made-up label | recall OR (of the whole image's labels) |\n|---|---|---|---|---|")
    for share in SHARES:
        probs = np.concatenate([predictor(kept_left(images[i:i + 32], share).numpy())[0]
                                for i in range(0, len(images), 32)])
        said = probs >= thresholds
        m = multilabel_metrics(probs, targets, thresholds)
        made_up = (said & (targets == 0)).any(1).mean()
        print(f"| {share:.2f} | {said.sum(1).mean():.2f} | {m['OP']:.3f} / {m['CP']:.3f} | "
              f"{made_up:.2f} | {m['OR']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
