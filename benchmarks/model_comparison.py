"""All architectures trained on the UC Merced dev data with the same split, backbone and
budget; prints OF1, CF1, mAP (validation split), CPU inference ms per tile and
parameter counts as a Markdown table.

Budget (the same for every model, sized for a 2-core CPU): EfficientNet-Lite0 with
ImageNet weights, frozen (every model trains only its own head), 256 px, batch 32, AdamW
lr 1e-3, cosine schedule, ``--epochs`` epochs (default 5), BCE (plus each model's own
losses). The ResNet baseline needs ImageNet ResNet weights, which are not packaged:
pass ``--resnet-weights FILE.safetensors`` to include it.

Usage: python benchmarks/model_comparison.py [--dataset DIR] [--epochs N] [--arch NAME ...]
       [--keep DIR]   (keep every trained model as DIR/<name>, for attention_localisation.py)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from engine.data.ucmerced import UCMercedMultiLabel
from engine.models.modelfile import load_model
from engine.progress import Reporter
from engine.train.trainer import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucmerced-ml"
RUNS = [("gap-linear", {}), ("mlgcn", {}), ("deeplift", {"variant": "agcn"}),
        ("deeplift", {"variant": "rgcn"}), ("cma", {}), ("ms-cma", {}), ("srdl", {}),
        ("cmgm", {"variant": "N-R-BiLSTM"})]


def inference_ms(model_dir: Path, batch: int = 16, rounds: int = 3) -> float:
    model, spec = load_model(model_dir)
    x = torch.randn(batch, len(spec.bands), spec.tile_px, spec.tile_px)
    with torch.inference_mode():
        model(x[:2])
        start = time.perf_counter()
        for _ in range(rounds):
            model(x)
    return 1000 * (time.perf_counter() - start) / (rounds * batch)


def train_and_measure(data: UCMercedMultiLabel, arch: str, config: dict, epochs: int,
                      keep: Path | None = None) -> dict:
    """Train one model under the shared budget; its validation metrics plus ``minutes``,
    ``params`` and ``ms`` (CPU inference per tile). ``keep``: copy the model there."""
    cfg = TrainConfig(arch=arch, epochs=epochs, batch_size=32, freeze_backbone=True,
                      device="cpu", patience=epochs, arch_config=dict(config),
                      backbone=config.get("backbone", "efficientnet_lite0"))
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = Trainer(cfg, [data], Path(tmp), quiet).run()
        minutes = (time.perf_counter() - start) / 60
        model, _ = load_model(Path(tmp))
        params = sum(p.numel() for p in model.parameters())
        ms = inference_ms(Path(tmp))
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(tmp, keep, ignore=shutil.ignore_patterns("checkpoint"))
    return {**result["metrics"], "minutes": minutes, "params": params, "ms": ms}


def _name(arch: str, config: dict) -> str:
    return arch + (f" ({config['variant']})" if "variant" in config else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=UCM)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--arch", action="append", help="only these architectures")
    ap.add_argument("--resnet-weights", help="ImageNet ResNet-50 weights (.safetensors)")
    ap.add_argument("--keep", type=Path, help="keep the trained models in this folder")
    ap.add_argument("--skip", action="append", default=[],
                    help="skip a run by its row name, e.g. 'deeplift (rgcn)'")
    args = ap.parse_args()
    runs = [r for r in RUNS if (not args.arch or r[0] in args.arch)
            and _name(*r) not in args.skip]
    if args.resnet_weights:
        runs.insert(1, ("resnet", {"backbone": "resnet50", "backbone_weights": args.resnet_weights}))
    data = UCMercedMultiLabel.open(args.dataset)
    rows = []
    for arch, config in runs:
        name = _name(arch, config)
        keep = args.keep / name.replace(" (", "-").rstrip(")") if args.keep else None
        m = train_and_measure(data, arch, config, args.epochs, keep)
        rows.append(f"| {name} | {m['OF1']:.3f} | {m['CF1']:.3f} | {m['mAP_macro']:.3f} | "
                    f"{m['ms']:.1f} | {m['params'] / 1e6:.2f} M | {m['minutes']:.1f} |")
        print(rows[-1], flush=True)
    print("\n| model | OF1 | CF1 | mAP | CPU ms/tile | parameters | train min |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
