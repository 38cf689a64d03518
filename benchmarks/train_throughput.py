"""Training throughput (images/s) of the gap-linear EfficientNet-Lite0 model.

Trains one epoch on a class-balanced UC Merced subset (10 images per scene class) at
256 px, once fine-tuning everything and once with the backbone frozen, on the CPU and,
when PyTorch sees one, on CUDA (with AMP). Prints images/s as the trainer measures it
(training steps only, validation excluded).

Usage: python benchmarks/train_throughput.py [--dataset DIR] [--per-class N]
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

import torch

from engine.data.ucmerced import UCMercedMultiLabel
from engine.progress import Reporter
from engine.train.trainer import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucmerced-ml"


def subset(root: Path, per_class: int) -> UCMercedMultiLabel:
    data = UCMercedMultiLabel.open(root)
    counts: dict[str, int] = {}
    keep = []
    for s in sorted(data.samples, key=lambda s: s.name):
        c = re.sub(r"\d+$", "", s.name)
        if counts.get(c, 0) < per_class:
            keep.append(s)
            counts[c] = counts.get(c, 0) + 1
    data.samples = keep
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=UCM)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    data = subset(args.dataset, args.per_class)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    print(f"{len(data.split('train'))} training images at 256 px, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    for device in devices:
        for frozen in (False, True):
            cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device=device,
                              freeze_backbone=frozen)
            with tempfile.TemporaryDirectory() as tmp:
                result = Trainer(cfg, [data], Path(tmp), quiet).run()
            name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
            print(f"{name:28s} {'frozen backbone' if frozen else 'full fine-tune':16s} "
                  f"{result['images_per_second']:8.2f} images/s")


if __name__ == "__main__":
    main()
