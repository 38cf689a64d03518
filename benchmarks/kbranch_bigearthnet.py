"""K-Branch CNN-RNN on the real BigEarthNet patches, end to end through the CLI.

Trains ``tilelabel train --arch kbranch`` on the BigEarthNet v2 (reBEN LMDB) and v1
(patch folders) samples in shared/data (19 labels; every band at its native 10/20/60 m
size), evaluates the test split of each with ``tilelabel evaluate``, and prints OF1, CF1,
mAP, CPU inference ms per patch, the parameter count and the training time. The sample
is tiny (9 training patches): this proves the multi-resolution path, not accuracy.

With ``--annotate`` it also trains a 20 m + 60 m K-Branch (``--variant 20m+60m``) and
annotates the Sentinel-2 L1C band files of shared/data/sentinel2-l1c-bands (20 m and
60 m GeoTIFFs, no 10 m bands), and annotates one BigEarthNet patch folder with the
10/20/60 m model.

Usage: python benchmarks/kbranch_bigearthnet.py [--epochs N] [--annotate] [--out DIR]
       [--data SHARED_DATA_DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.band_groups import band_groups
from engine.models.modelfile import load_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PATCH_NAME = "S2A_MSIL2A_20170613T101031_87_48"


def datasets(shared: Path) -> tuple[str, str]:
    return (f"bigearthnet-v2:{shared / 'bigearthnet-v2-lmdb'}",
            f"bigearthnet-v1:{shared / 'bigearthnet-s2-v1'}")


def cli(*args: object) -> dict:
    """Run ``tilelabel ARGS --json-progress``; the job's result event."""
    cmd = [sys.executable, "-m", "engine.cli", *map(str, args), "--json-progress"]
    print("$ tilelabel " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    events = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    if done.returncode != 0:
        raise SystemExit(f"tilelabel {args[0]} failed ({done.returncode}): "
                         f"{errors or done.stderr[-2000:]}")
    return next(e for e in reversed(events) if e.get("event") == "result")


def inference_ms(model_dir: Path, threads: int, batch: int = 16, rounds: int = 5) -> float:
    """Median CPU forward time per patch with ``threads`` intra-op threads, inputs at
    each group's native size."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _forward_ms(model_dir, batch, rounds)
    finally:
        torch.set_num_threads(previous)


def _forward_ms(model_dir: Path, batch: int, rounds: int) -> float:
    model, spec = load_model(model_dir)
    x = {g.name: torch.randn(batch, len(g.bands), g.px, g.px)
         for g in band_groups(spec.arch_config)}
    times = []
    with torch.inference_mode():
        model({k: v[:2] for k, v in x.items()})
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def train(shared: Path, out: Path, epochs: int, *extra: str) -> tuple[dict, float]:
    v2, v1 = datasets(shared)
    start = time.perf_counter()
    result = cli("train", "--arch", "kbranch", "--dataset", v2, "--dataset", v1, "--out", out,
                 "--epochs", epochs, "--batch-size", 4, "--lr", "1e-3", "--patience", epochs,
                 "--device", "cpu", *extra)
    return result, time.perf_counter() - start


def annotate(raster: Path, model: Path, store: Path) -> dict:
    result = cli("annotate", raster, "--model", model, "--out", store, "--device", "cpu")
    import geopandas as gpd

    tiles = gpd.read_file(store, layer="tiles")
    top = tiles["top_label"].value_counts().head(3).to_dict()
    print(f"  {result['tiles_written']} tiles in {result['seconds']} s, attention "
          f"{result['attention']}\n  most frequent top labels: {top}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--annotate", action="store_true", help="also annotate real band files")
    ap.add_argument("--out", type=Path, help="keep the models and stores here")
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    args = ap.parse_args()
    v2, v1 = datasets(args.data)
    work = args.out or Path(tempfile.mkdtemp(prefix="kbranch-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    model_dir = work / "kbranch"
    result, seconds = train(args.data, model_dir, args.epochs)
    model, spec = load_model(model_dir)
    params = sum(p.numel() for p in model.parameters())
    groups = ", ".join(f"{g.name} {len(g.bands)} bands {g.px} px"
                       for g in band_groups(spec.arch_config))
    threads = torch.get_num_threads()
    ms = {n: inference_ms(model_dir, n) for n in sorted({1, threads})}
    rows = []
    for name, dataset in (("v2 (reBEN)", v2), ("v1", v1)):
        report = work / f"test_{name.split()[0]}.json"
        cli("evaluate", "--model", model_dir, "--dataset", dataset, "--split", "test",
            "--report", report, "--device", "cpu", "--overwrite")
        m = json.loads(report.read_text())
        rows.append(f"| BigEarthNet {name} test | {m['n_images']} | {m['OF1']:.3f} | "
                    f"{m['CF1']:.3f} | {m['mAP_macro']:.3f} |")
    val = result["metrics"]
    rows.append(f"| validation (both, best epoch {result['best_epoch'] + 1}) | "
                f"{spec.training['n_val']} | {val['OF1']:.3f} | {val['CF1']:.3f} | "
                f"{val['mAP_macro']:.3f} |")
    print(f"\nK-Branch: {groups}; {spec.training['n_train']} training patches, "
          f"{result['epochs_run']} epochs")
    print("| data | patches | OF1 | CF1 | mAP |\n|---|---|---|---|---|\n" + "\n".join(rows))
    speed = ", ".join(f"{v:.1f} ms/patch with {n} thread{'s' if n > 1 else ''}"
                      for n, v in ms.items())
    print(f"\nparameters {params / 1e6:.2f} M; CPU inference (batch 16) {speed}; train time "
          f"{seconds:.0f} s end to end ({result['images_per_second']} images/s in the "
          "training loop)")

    if args.annotate:
        print("\nannotate: the 10/20/60 m model on a BigEarthNet patch folder")
        annotate(args.data / "bigearthnet-s2-v1" / PATCH_NAME, model_dir, work / "patch.gpkg")
        light = work / "kbranch_20m_60m"
        train(args.data, light, args.epochs, "--variant", "20m+60m")
        print("annotate: the 20 m + 60 m model on the L1C band files (no 10 m bands)")
        annotate(args.data / "sentinel2-l1c-bands", light, work / "l1c.gpkg")
    print(f"\noutputs in {work}")


if __name__ == "__main__":
    main()
