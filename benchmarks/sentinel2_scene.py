"""A full Sentinel-2 scene annotated end to end with a Sentinel-2 (K-Branch) model.

The scene is a folder of band VRTs, each a mosaic of the real MajorTOM L2A cell in
shared/data (1068 x 1068 px at 10 m) repeated 11 x 11 times: 11,748 x 11,748 px at 10 m,
more than a Sentinel-2 tile's 10,980 x 10,980 px, every band at its native 10/20/60 m.
``tilelabel annotate`` runs on the folder as a process with the default runtime; the
figures are its wall time and peak resident memory (target: under 5 min on the 2-core
CPU). Without --model, a K-Branch model is first trained for 2 epochs on the BigEarthNet
v2 sample (its accuracy is not the point; its graph and cost are those of any K-Branch).

Usage: python benchmarks/sentinel2_scene.py [--model DIR] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.data.vrt import repeat_raster_vrt

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CELL = SHARED / "sentinel2-l2a-majortom" / "T48QUE_199U_1099R"
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
TARGET_S = 300


def train_kbranch(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "engine.cli", "train", "--arch", "kbranch",
                    "--dataset", f"bigearthnet-v2:{SHARED / 'bigearthnet-v2-lmdb'}",
                    "--out", str(out), "--epochs", "2", "--batch-size", "4"],
                   check=True, cwd=ROOT, capture_output=True)
    return out


def scene_folder(folder: Path, repeat: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for band in BANDS:
        repeat_raster_vrt(CELL / f"{band}.tif", folder / f"{band}.vrt", repeat, repeat)
    import rasterio

    with rasterio.open(folder / "B02.vrt") as ds:
        return ds.width


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a K-Branch model (default: train one)")
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_kbranch(Path(tmp) / "kbranch")
        side = scene_folder(Path(tmp) / "scene", args.repeat)
        start = time.perf_counter()
        with open(Path(tmp) / "out.jsonl", "w+") as out, open(Path(tmp) / "err.txt", "w+") as err:
            job = subprocess.Popen([sys.executable, "-m", "engine.cli", "annotate",
                                    str(Path(tmp) / "scene"), "--out", str(Path(tmp) / "s2.gpkg"),
                                    "--model", str(model), "--json-progress"],
                                   cwd=ROOT, stdout=out, stderr=err)
            _, status, usage = os.wait4(job.pid, 0)  # this process's own peak memory
            seconds = time.perf_counter() - start
            out.seek(0), err.seek(0)
            if status:
                sys.exit(f"annotate failed:\n{err.read()}")
            result = [json.loads(l) for l in out.read().splitlines() if '"result"' in l][-1]
    peak = usage.ru_maxrss / 1024 ** 2  # Linux: KiB
    print(f"scene:      {side} x {side} px at 10 m ({side * 10 / 1000:.1f} km), "
          f"{len(BANDS)} bands at 10/20/60 m ({args.repeat} x {args.repeat} MajorTOM cells)")
    print(f"model:      {result['model_id']} on {result['runtime']} ({result['device']})")
    print(f"tiles:      {result['tiles_written']} written, "
          f"{result['tiles_skipped_nodata']} skipped")
    print(f"wall time:  {seconds:.1f} s for the process ({result['tiles_written'] / seconds:.1f} "
          f"tiles/s; target < {TARGET_S} s: {'met' if seconds < TARGET_S else 'NOT met'})")
    print(f"peak RSS:   {peak:.2f} GiB (the annotate process)")


if __name__ == "__main__":
    main()
