"""Annotate memory: a raster of at least 20,000 x 20,000 px annotated end to end.

The raster is a VRT mosaic repeating a real 0.25 m scene 20 x 20 times (20,000 x 20,000
px, 5 km x 5 km). Prints tiles, seconds and the peak resident memory of this process;
target: peak RSS under 2 GiB.

Usage: python benchmarks/annotate_memory.py [--raster PATH] [--repeat N]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from engine.data.vrt import repeat_raster_vrt
from engine.infer.annotate import AnnotateOptions, run_annotate
from engine.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "rasters" / "aerial_0.25m_gorinchem_deepforest_test_tiled.tif"
LIMIT_GIB = 2.0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raster", type=Path, default=SCENE)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vrt = repeat_raster_vrt(args.raster, Path(tmp) / "mosaic.vrt", args.repeat, args.repeat)
        opts = AnnotateOptions(raster=str(vrt), store=Path(tmp) / "big.gpkg", device="cpu")
        start = time.perf_counter()
        result = run_annotate(opts, Reporter(json_lines=False))
        seconds = time.perf_counter() - start
        att = Path(result["attention"]).stat().st_size / 1024 ** 2
        store = Path(result["store"]).stat().st_size / 1024 ** 2
    import rasterio
    with rasterio.open(args.raster) as ds:
        size = (ds.width * args.repeat, ds.height * args.repeat)
    peak = peak_rss_gib()
    print(f"raster:     {size[0]} x {size[1]} px (VRT, {args.repeat} x {args.repeat} repeats)")
    print(f"tiles:      {result['tiles_written']} written, {result['tiles_skipped_nodata']} skipped")
    print(f"seconds:    {seconds:.1f}  ({result['tiles_written'] / seconds:.2f} tiles/s)")
    print(f"outputs:    store {store:.1f} MiB, attention {att:.1f} MiB")
    print(f"peak RSS:   {peak:.2f} GiB  (target < {LIMIT_GIB} GiB: "
          f"{'met' if peak < LIMIT_GIB else 'NOT met'})")


if __name__ == "__main__":
    main()
