"""Fault injection: kills at random moments, full disks, concurrent writers and readers.

Each test names what must survive. Full disks are real: a 2-4 MB tmpfs, mounted where
this machine allows it (root, as in CI); elsewhere those tests skip and say why.
"""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE, mounted_tmpfs

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _engine(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            **kw)


def _run(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_store(store: Path) -> tuple[int, int]:
    """(tiles, distinct tile ids) of a store that passes SQLite's integrity check."""
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT tile_id) FROM tiles").fetchone()


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory, tiny_model_factory):
    from engine.data.vrt import repeat_raster_vrt

    folder = tmp_path_factory.mktemp("mosaic")
    return (repeat_raster_vrt(SAMPLE, folder / "mosaic.vrt", 3, 3),   # 3000 x 3000 px
            tiny_model_factory(gsd_m=0.3, tile_px=64))                 # 19.2 m tiles: 39 x 39


@pytest.mark.parametrize("kill_after", [0.5, 3.0, 6.0])
def test_sigkill_at_any_moment_leaves_a_store_a_rerun_completes(tmp_path, mosaic, kill_after):
    raster, model = mosaic
    store = tmp_path / "s.gpkg"
    args = ("annotate", raster, "--out", store, "--model", model, "--batch-size", "8",
            "--no-attention")
    proc = _engine(*args)
    time.sleep(kill_after)  # before the store exists, while it is created, mid-run
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    if store.exists():
        tiles, distinct = _check_store(store)
        assert tiles == distinct
    done = _run(*args, "--json-progress")
    assert done.returncode == 0, done.stderr
    assert _check_store(store) == (1521, 1521)  # every tile once: upserts, no duplicates
    with closing(sqlite3.connect(store)) as conn:
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM runs ORDER BY fid")]
    assert outcomes[-1] == "completed" and "running" not in outcomes  # the killed run: 'killed'
    assert not list(tmp_path.glob(".s.gpkg.*.tmp"))  # a kill during creation: cleaned up


def test_a_second_writer_on_the_same_store_is_refused_and_the_first_completes(tmp_path, mosaic):
    raster, model = mosaic
    store = tmp_path / "s.gpkg"
    args = ("annotate", raster, "--out", store, "--model", model, "--no-attention")
    first = _engine(*args, "--json-progress")
    for line in first.stdout:  # the first job holds the store once it reports progress
        if '"progress"' in line:
            break
    second = _run(*args)
    assert second.returncode == 2 and "another TileLabel job is writing" in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert _check_store(store) == (1521, 1521)


def test_two_jobs_creating_one_new_store_never_lose_committed_tiles(tmp_path, tiny_model_factory):
    model = tiny_model_factory(gsd_m=0.3, tile_px=64)
    for attempt in range(4):
        store = tmp_path / f"new{attempt}.gpkg"
        jobs = [_engine("annotate", SAMPLE, "--out", store, "--model", model, "--no-attention",
                        "--json-progress") for _ in range(2)]
        results = [j.communicate(timeout=300) for j in jobs]
        codes = sorted(j.returncode for j in jobs)
        assert codes in ([0, 0], [0, 2]), results
        tiles, distinct = _check_store(store)
        assert tiles == distinct == 169  # 250 m / 19.2 m: 13 x 13 tiles


def test_a_reader_holding_a_transaction_does_not_block_annotate(tmp_path, tiny_model_factory):
    model = tiny_model_factory(gsd_m=0.3, tile_px=64)
    store = tmp_path / "s.gpkg"
    assert _run("annotate", SAMPLE, "--out", store, "--model", model, "--no-attention",
                "--extent", "127375", "428150", "127475", "428250").returncode == 0
    reader = sqlite3.connect(store)  # e.g. QGIS with the attribute table open
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM tiles").fetchone()
    try:
        done = _run("annotate", SAMPLE, "--out", store, "--model", model, "--no-attention",
                    timeout=120)
    finally:
        reader.close()
    assert done.returncode == 0, done.stderr
    assert _check_store(store)[0] == 169


# -- full disks ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (unmounted afterwards); skips where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / f"disk-{uuid.uuid4().hex[:6]}", "4m") as mount:
        yield mount


def _fill(disk: Path, leave_bytes: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_under_the_attention_raster_fails_the_run_clearly(tmp_path, small_disk,
                                                                      tiny_model_factory):
    model = tiny_model_factory(gsd_m=0.3, tile_px=64)
    store = tmp_path / "s.gpkg"
    _fill(small_disk, 3_000)
    done = _run("annotate", SAMPLE, "--out", store, "--model", model,
                "--attention-dir", small_disk / "att")
    assert done.returncode == 2, done.stderr
    assert "could not write the attention raster" in done.stderr
    assert "Traceback" not in done.stderr
    with closing(sqlite3.connect(store)) as conn:
        outcome, message = conn.execute("SELECT outcome, message FROM runs").fetchone()
    assert outcome == "failed" and "attention raster" in message
    assert _check_store(store)[0] > 0  # the committed tiles stay


@pytest.mark.parametrize("command", ["annotate", "correct", "export"])
def test_a_full_disk_leaves_the_existing_store_as_it_was(tmp_path, small_disk,
                                                         tiny_model_factory, command):
    model = tiny_model_factory(gsd_m=0.3, tile_px=64)
    store = small_disk / "s.gpkg"
    assert _run("annotate", SAMPLE, "--out", store, "--model", model, "--no-attention",
                "--extent", "127375", "428150", "127475", "428250").returncode == 0
    with closing(sqlite3.connect(store)) as conn:
        tile = conn.execute("SELECT tile_id FROM tiles").fetchone()[0]
    assert _run("correct", store, "--tile", tile, "--verify").returncode == 0
    before = _digest(store)
    _fill(small_disk, 0)
    if command == "annotate":
        done = _run("annotate", SAMPLE, "--out", store, "--model", model, "--no-attention")
    elif command == "correct":
        done = _run("correct", store, "--tile", tile, "--labels", "airplane")
    else:
        done = _run("export", store, "--out", small_disk / "e.gpkg")
    assert done.returncode == 2, done.stderr
    assert "disk is full" in done.stderr and "Traceback" not in done.stderr
    (small_disk / "filler").unlink()
    if command != "annotate":  # annotate may have recorded its failed run
        assert _digest(store) == before
    assert _check_store(store)[0] > 0
    assert not (small_disk / "e.gpkg").exists()
