"""Annotating many rasters on a Dask cluster: 1 vs N local workers over the same rasters.

The rasters: ``--rasters`` VRT mosaics (``--repeat`` x ``--repeat``) of a real scene
(../shared/data/rasters, the Gorinchem orthophoto by default), each annotated into one
store by ``tilelabel annotate ... --cluster local:N`` as a process (cluster start-up,
model load and the store included), and once without ``--cluster`` (sequential, this
engine's own reader threads and ONNX Runtime on every core). Prints seconds, tiles/s and
the scaling efficiency (tiles/s with N workers / (N x tiles/s with 1 worker)).

Usage: python benchmarks/annotate_cluster.py [--workers 1 2] [--rasters 3] [--repeat 4] [--attention]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.data.vrt import repeat_raster_vrt

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "rasters" / "aerial_0.25m_gorinchem_deepforest_test_tiled.tif"


def annotate(rasters: list[Path], store: Path, cluster: str | None, block: int,
             attention: bool) -> tuple[float, int]:
    """Seconds of one ``tilelabel annotate`` process over ``rasters``, and its tiles."""
    cmd = [sys.executable, "-m", "engine.cli", "annotate", *map(str, rasters), "--out",
           str(store), "--json-progress"] + ([] if attention else ["--no-attention"])
    if cluster:
        cmd += ["--cluster", cluster, "--cluster-block", str(block)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"annotate failed ({done.returncode}): {done.stderr[-1500:]}")
    result = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")][-1]
    return seconds, result["tiles_written"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=SCENE)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rasters", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--block", type=int, default=128, help="tiles per cluster task")
    ap.add_argument("--attention", action="store_true", help="write the attention rasters "
                    "too (on a cluster the workers write the pieces)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rasters = [repeat_raster_vrt(args.scene, Path(tmp) / f"mosaic{i}.vrt", args.repeat,
                                     args.repeat) for i in range(args.rasters)]
        rows = [("sequential (no --cluster)",
                 *annotate(rasters, Path(tmp) / "seq.gpkg", None, 0, args.attention))]
        for n in args.workers:
            rows.append((f"--cluster local:{n}",
                         *annotate(rasters, Path(tmp) / f"c{n}.gpkg", f"local:{n}", args.block,
                                   args.attention)))
    one = next((r for r in rows if r[0] == "--cluster local:1"), None)
    print(f"{args.rasters} rasters, each a {args.repeat} x {args.repeat} mosaic of {args.scene.name}")
    print(f"{'run':28s} {'seconds':>8s} {'tiles':>6s} {'tiles/s':>8s} {'efficiency':>10s}")
    for name, seconds, tiles in rows:
        rate = tiles / seconds
        eff = ""
        if one is not None and name.startswith("--cluster"):
            n = int(name.rsplit(":", 1)[1])
            eff = f"{rate / (n * one[2] / one[1]):.2f}"
        print(f"{name:28s} {seconds:8.1f} {tiles:6d} {rate:8.1f} {eff:>10s}")


if __name__ == "__main__":
    main()
