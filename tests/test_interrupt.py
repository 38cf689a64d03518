"""A job killed with SIGTERM half way leaves a store that opens with every committed tile."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import geopandas as gpd

from conftest import ROOT, SAMPLE


def test_sigterm_mid_run_keeps_committed_tiles_and_a_valid_store(tmp_path, tiny_model_factory):
    from engine.data.vrt import repeat_raster_vrt

    big = repeat_raster_vrt(SAMPLE, tmp_path / "mosaic.vrt", 6, 6)  # 6000 x 6000 px
    model = tiny_model_factory(gsd_m=0.3, tile_px=64)  # 19.2 m tiles -> 6084 tiles
    store = tmp_path / "run.gpkg"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "annotate", str(big), "--out", str(store),
         "--model", str(model), "--batch-size", "8", "--json-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    done_at_kill = 0
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["done"] >= 64:
            done_at_kill = event["done"]
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in rest.splitlines()]
    assert events[-1]["event"] == "error" and "interrupted" in events[-1]["message"]
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        outcome, written = conn.execute("SELECT outcome, tiles_written FROM runs").fetchone()
    assert outcome == "interrupted"
    tiles = gpd.read_file(store, layer="tiles")
    assert done_at_kill <= len(tiles) == written < 6084
