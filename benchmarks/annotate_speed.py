"""Annotate speed: end-to-end annotate time vs the model's forward pass alone.

Both are measured in this one run over the same tiles (a 4 x 4 VRT mosaic of a real
scene) with the default model on the CPU, alternately, ``--rounds`` times each; the
figures are the medians (single timings on a shared 2-core machine vary by 10-20 %). The ratio says how much reading, resampling,
and writing the store and the attention raster add to pure compute; target <= 1.25.

Usage: python benchmarks/annotate_speed.py [--raster PATH] [--repeat N] [--batch-size N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.data.vrt import repeat_raster_vrt
from engine.infer.annotate import DEFAULT_MODEL, AnnotateOptions, run_annotate
from engine.infer.predictor import Predictor
from engine.models.modelfile import load_model
from engine.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "rasters" / "aerial_0.25m_gorinchem_deepforest_test_tiled.tif"
TARGET_RATIO = 1.25


def forward_only(n_tiles: int, batch_size: int) -> float:
    model, spec = load_model(DEFAULT_MODEL)
    predictor = Predictor(model, spec, torch.device("cpu"))
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((batch_size, len(spec.bands), spec.tile_px, spec.tile_px),
                                dtype=np.float32)
    predictor(batch[:2])  # warm-up
    start, done = time.perf_counter(), 0
    while done < n_tiles:
        n = min(batch_size, n_tiles - done)
        predictor(batch[:n])
        done += n
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raster", type=Path, default=SCENE)
    ap.add_argument("--repeat", type=int, default=4, help="mosaic the raster N x N times")
    ap.add_argument("--rounds", type=int, default=3, help="timings of each kind (median)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    quiet = Reporter(json_lines=True, stream=open(os.devnull, "w"))
    e2e_times, forward_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        vrt = repeat_raster_vrt(args.raster, Path(tmp) / "mosaic.vrt", args.repeat, args.repeat)
        run_annotate(AnnotateOptions(raster=str(args.raster), store=Path(tmp) / "warm.gpkg",
                                     device="cpu", attention=False), quiet)
        for r in range(args.rounds):
            opts = AnnotateOptions(raster=str(vrt), store=Path(tmp) / f"speed{r}.gpkg",
                                   batch_size=args.batch_size, device="cpu")
            start = time.perf_counter()
            result = run_annotate(opts, quiet)
            e2e_times.append(time.perf_counter() - start)
            forward_times.append(forward_only(result["tiles_written"], args.batch_size))
    tiles = result["tiles_written"]
    end_to_end, forward = statistics.median(e2e_times), statistics.median(forward_times)
    ratio = end_to_end / forward
    print(f"torch threads: {torch.get_num_threads()}, batch size {args.batch_size}")
    print(f"tiles:              {tiles}")
    print(f"end-to-end annotate: {end_to_end:7.2f} s  ({tiles / end_to_end:.2f} tiles/s)")
    print(f"forward pass alone:  {forward:7.2f} s  ({tiles / forward:.2f} tiles/s)")
    print(f"all timings (s): end-to-end {[round(t, 2) for t in e2e_times]}, "
          f"forward {[round(t, 2) for t in forward_times]}")
    print(f"ratio:               {ratio:7.3f}  (target <= {TARGET_RATIO}: "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
