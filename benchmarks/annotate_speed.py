"""Annotate speed: PyTorch and ONNX Runtime, forward pass alone and end to end.

In one run over the same tiles (an N x N VRT mosaic of a real scene), alternately,
``--rounds`` times each (the figures are medians; single timings on a shared 2-core
machine vary by 10-20 %):
- forward pass alone on PyTorch and on ONNX Runtime (random tiles of the model's size);
- end-to-end annotate in this process on each runtime (read, resample, predict, store,
  attention GeoTIFF);
- end-to-end ``tilelabel annotate`` as a process with the default runtime, as an analyst
  or the plugin runs it (start-up and model load included).
Target on this CPU: end-to-end annotate with the default runtime within 1.1 x of ONNX
Runtime's forward pass, judged per round (each end-to-end run against the forward pass
timed beside it; the median of those ratios), since this shared machine's speed drifts
by 10-20 % from one minute to the next.

``--arch-table`` adds the forward pass of every architecture (untrained weights, same
graph and cost as trained ones) on both runtimes, in ms per tile.

Usage: python benchmarks/annotate_speed.py [--model DIR] [--repeat N] [--arch-table]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.data.vrt import repeat_raster_vrt
from engine.infer.annotate import DEFAULT_MODEL, AnnotateOptions, run_annotate
from engine.infer.onnx_export import example_inputs
from engine.infer.runtime import open_predictor
from engine.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "rasters" / "aerial_0.25m_gorinchem_deepforest_test_tiled.tif"
TARGET_RATIO = 1.1


def forward_seconds(predictor, n_tiles: int, batch_size: int) -> float:
    """Seconds to predict ``n_tiles`` random tiles in batches (after one warm-up batch)."""
    batch = example_inputs(predictor.spec, batch=batch_size)
    x = batch["x"] if list(batch) == ["x"] else batch
    take = (lambda n: x[:n]) if isinstance(x, np.ndarray) else (
        lambda n: {k: v[:n] for k, v in x.items()})
    predictor(take(min(2, batch_size)))
    start, done = time.perf_counter(), 0
    while done < n_tiles:
        n = min(batch_size, n_tiles - done)
        predictor(take(n))
        done += n
    return time.perf_counter() - start


def annotate_seconds(raster: Path, store: Path, model: Path, runtime: str,
                     batch_size: int) -> tuple[float, int]:
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    opts = AnnotateOptions(raster=str(raster), store=store, model_dir=model,
                           batch_size=batch_size, device="cpu", runtime=runtime)
    start = time.perf_counter()
    result = run_annotate(opts, quiet)
    return time.perf_counter() - start, result["tiles_written"]


def process_seconds(raster: Path, store: Path, model: Path, batch_size: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "annotate", str(raster), "--out",
                    str(store), "--model", str(model), "--batch-size", str(batch_size),
                    "--json-progress"], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def pipeline_table(args: argparse.Namespace) -> None:
    times: dict[str, list[float]] = {k: [] for k in
                                     ("torch forward", "onnx forward", "annotate torch",
                                      "annotate onnx", "tilelabel annotate (process)")}
    predictors = {r: open_predictor(args.model, r, "cpu") for r in ("torch", "onnx")}
    with tempfile.TemporaryDirectory() as tmp:
        vrt = repeat_raster_vrt(args.raster, Path(tmp) / "mosaic.vrt", args.repeat, args.repeat)
        annotate_seconds(args.raster, Path(tmp) / "warm.gpkg", args.model, "onnx", 16)
        for r in range(args.rounds):
            for runtime in ("torch", "onnx"):
                seconds, tiles = annotate_seconds(vrt, Path(tmp) / f"{runtime}{r}.gpkg",
                                                  args.model, runtime, args.batch_size)
                times[f"annotate {runtime}"].append(seconds)
                times[f"{runtime} forward"].append(
                    forward_seconds(predictors[runtime], tiles, args.batch_size))
            times["tilelabel annotate (process)"].append(
                process_seconds(vrt, Path(tmp) / f"cli{r}.gpkg", args.model, args.batch_size))
    median = {k: statistics.median(v) for k, v in times.items()}
    onnx_forward = median["onnx forward"]
    print(f"model {predictors['onnx'].spec.model_id}; {tiles} tiles of "
          f"{predictors['onnx'].spec.tile_px} px ({args.repeat} x {args.repeat} mosaic), "
          f"batch {args.batch_size}, {os.cpu_count()} CPU cores, medians of {args.rounds}")
    print(f"{'':32s} {'seconds':>8s} {'tiles/s':>8s} {'x onnx forward':>15s}")
    for name, seconds in median.items():
        print(f"{name:32s} {seconds:8.2f} {tiles / seconds:8.1f} {seconds / onnx_forward:15.2f}")
    print("all timings (s): " + "; ".join(f"{k} {[round(t, 2) for t in v]}"
                                          for k, v in times.items()))
    # each round's end-to-end run against the forward pass timed right after it: the
    # machine's speed drifts by 10-20 % between minutes, far more than the overhead
    for name in ("annotate onnx", "tilelabel annotate (process)"):
        ratios = [a / f for a, f in zip(times[name], times["onnx forward"])]
        ratio = statistics.median(ratios)
        print(f"{name} / onnx forward of the same round: median {ratio:.3f} "
              f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target <= {TARGET_RATIO}: "
              f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")


def arch_table(batch_size: int, tiles: int) -> None:
    from engine.data.datasets import open_dataset
    from engine.models.blank import VARIANTS, blank_model_dir

    ucm = open_dataset(f"ucmerced:{ROOT / 'tests' / 'data' / 'ucmerced_mini'}")
    targets = np.stack([s.target for s in ucm.samples])
    print(f"\nforward pass per architecture ({tiles} tiles, batch {batch_size}, CPU)")
    print(f"{'architecture':22s} {'tile px':>7s} {'torch ms/tile':>14s} {'onnx ms/tile':>13s} "
          f"{'speed-up':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, variant in VARIANTS:
            px = 256
            model = blank_model_dir(arch, variant, list(ucm.labels), targets,
                                    Path(tmp) / f"{arch}-{variant}", px=px)
            ms = {}
            for runtime in ("torch", "onnx"):
                p = open_predictor(model, runtime, "cpu")
                ms[runtime] = 1000 * min(forward_seconds(p, tiles, batch_size) for _ in range(2)) / tiles
            name = f"{arch} {variant}" if variant else arch
            print(f"{name:22s} {p.spec.tile_px:7d} {ms['torch']:14.1f} {ms['onnx']:13.1f} "
                  f"{ms['torch'] / ms['onnx']:9.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raster", type=Path, default=SCENE)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--repeat", type=int, default=5, help="mosaic the raster N x N times")
    ap.add_argument("--rounds", type=int, default=3, help="timings of each kind (median)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--arch-table", action="store_true",
                    help="also the forward pass of every architecture on both runtimes")
    ap.add_argument("--arch-tiles", type=int, default=64)
    args = ap.parse_args()
    pipeline_table(args)
    if args.arch_table:
        arch_table(args.batch_size, args.arch_tiles)


if __name__ == "__main__":
    main()
