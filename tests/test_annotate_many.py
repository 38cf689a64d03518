"""Many rasters into one store: real rasters in different CRSs, a bad raster among good
ones, resume after a kill, and the ways of naming the rasters."""
from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import mapping, shape

from conftest import DATA, ROOT, SAMPLE, SAMPLE_TILES
from engine.infer.raster_inputs import expand_inputs
from engine.store import geopackage as gpkg

US = DATA / "usgs_hro_10325_excerpt.tif"       # EPSG:3857, 0.2 m
COARSE = DATA / "landsat8_itaipu_excerpt.tif"  # 30 m: refused by the 0.3 m default model


def _tiles(store) -> dict[str, tuple]:
    """tile_id -> (raster, raster_crs, polygon, p_* values)."""
    with sqlite3.connect(store) as conn:
        cols = [r[0] for r in conn.execute("SELECT column_name FROM label_columns")]
        rows = conn.execute(f"SELECT tile_id, raster, raster_crs, geom, {', '.join(cols)} "
                            "FROM tiles").fetchall()
    return {r[0]: (r[1], r[2], gpkg.read_geometry(r[3]), np.array(r[4:])) for r in rows}


def _result(out: str) -> dict:
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")][-1]


def test_rasters_in_two_crss_go_into_one_store_as_their_own_runs_would(tmp_path, run_cli):
    res = run_cli("annotate", SAMPLE, US, "--out", tmp_path / "both.gpkg", "--json-progress",
                  "--min-valid", "0")  # every US tile, slivers included: four grid squares
    assert res.code == 0, res.err
    result = _result(res.out)
    assert result["crs"] == "EPSG:28992" and [r["outcome"] for r in result["rasters"]] == [
        "completed", "completed"]
    both = _tiles(tmp_path / "both.gpkg")
    for raster, crs in ((SAMPLE, "EPSG:28992"), (US, "EPSG:3857")):
        single = tmp_path / f"{raster.stem}.gpkg"
        assert run_cli("annotate", raster, "--out", single, "--min-valid", "0").code == 0
        alone = _tiles(single)
        assert alone and set(alone) <= set(both)
        for tid, (_, raster_crs, _shape, probs) in alone.items():
            assert both[tid][1] == raster_crs == crs  # the raster's CRS kept per tile
            assert np.abs(both[tid][3] - probs).max() < 1e-5
    # the US tiles' polygons are their raster-grid boxes reprojected into the store's CRS:
    # taken back to the raster's CRS, they start at its corner and are 76.8 m squares
    with rasterio.open(US) as src:
        left, top = src.bounds.left, src.bounds.top
    back = [transform_geom("EPSG:28992", "EPSG:3857", mapping(v[2]))
            for v in both.values() if v[1] == "EPSG:3857"]
    boxes = np.array([shape(g).bounds for g in back])
    assert len(boxes) == 4
    assert boxes[:, 0].min() == pytest.approx(left, abs=0.1)  # half a pixel
    assert boxes[:, 3].max() == pytest.approx(top, abs=0.1)
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert np.allclose(sides, sides[0], atol=0.1)  # all the same size: squares of the grid
    for raster in result["rasters"]:
        assert raster["attention"] and os.path.isfile(raster["attention"])  # one per raster
    events = [json.loads(l) for l in res.out.splitlines() if l.startswith("{")]
    overall = [(e["done"], e["total"]) for e in events if e.get("stage") == "rasters"]
    assert overall == [(1, 2), (2, 2)]  # progress per raster ("predict") and overall


def test_a_bad_raster_is_reported_and_the_others_are_annotated(tmp_path, run_cli):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a GeoTIFF")
    res = run_cli("annotate", SAMPLE, broken, COARSE, "--out", tmp_path / "s.gpkg",
                  "--json-progress")
    assert res.code == 3, res.err
    outcomes = {os.path.basename(r["raster"]): r for r in _result(res.out)["rasters"]}
    assert outcomes[SAMPLE.name]["outcome"] == "completed"
    assert outcomes["broken.tif"]["outcome"] == "failed"
    assert "coarser than the model" in outcomes[COARSE.name]["message"]
    assert len(_tiles(tmp_path / "s.gpkg")) == outcomes[SAMPLE.name]["tiles_written"] > 0
    with sqlite3.connect(tmp_path / "s.gpkg") as conn:
        outcome, message = conn.execute("SELECT outcome, message FROM runs").fetchone()
    assert outcome == "completed with failures" and "2 of 3 rasters failed" in message


def _mosaic_with_a_missing_file(folder) -> "Path":
    """A 3 x 3 VRT mosaic of the sample whose top-middle file is gone from the share: it
    opens and passes the corner checks, and fails when that part is read."""
    from engine.data.vrt import repeat_raster_vrt

    vrt = repeat_raster_vrt(SAMPLE, folder / "mosaic.vrt", 3, 3)
    parts = vrt.read_text().split("<SimpleSource>")
    parts[2::9] = [p.replace(SAMPLE.name, "gone_from_the_share.tif", 1) for p in parts[2::9]]
    vrt.write_text("<SimpleSource>".join(parts))
    return vrt


@pytest.mark.parametrize("cluster", [[], ["--cluster", "local:2"]], ids=["alone", "cluster"])
def test_a_raster_failing_half_way_is_reported_and_the_others_finish(tmp_path, run_cli,
                                                                      cluster):
    holey = _mosaic_with_a_missing_file(tmp_path)
    res = run_cli("annotate", holey, SAMPLE, "--out", tmp_path / "h.gpkg", "--json-progress",
                  *cluster)
    assert res.code == 3, res.err
    failed, done = _result(res.out)["rasters"]
    assert failed["outcome"] == "failed" and "reading pixels" in failed["message"]
    assert done["outcome"] == "completed" and done["tiles_written"] == SAMPLE_TILES
    assert {v[0] for v in _tiles(tmp_path / "h.gpkg").values()} >= {str(SAMPLE)}


def test_a_killed_run_resumes_where_it_stopped(tmp_path, run_cli):
    store = tmp_path / "r.gpkg"
    args = [sys.executable, "-m", "engine.cli", "annotate", str(SAMPLE), str(US), "--out",
            str(store), "--json-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:  # stop it as soon as the second raster starts
        if "annotating" in line and US.name in line:
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    first = _tiles(store)
    assert {v[0] for v in first.values()} == {str(SAMPLE)}  # the first raster, whole
    res = run_cli("annotate", SAMPLE, US, "--out", store, "--json-progress")
    assert res.code == 0, res.err
    assert [r["outcome"] for r in _result(res.out)["rasters"]] == ["skipped", "completed"]
    straight = tmp_path / "straight.gpkg"
    assert run_cli("annotate", SAMPLE, US, "--out", straight).code == 0
    resumed, want = _tiles(store), _tiles(straight)
    assert resumed.keys() == want.keys()  # every tile once
    assert max(np.abs(resumed[t][3] - want[t][3]).max() for t in want) < 1e-5


def test_a_store_crs_reprojects_every_raster(tmp_path, run_cli):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "u.gpkg", "--store-crs", "EPSG:32631",
                  "--json-progress")
    assert res.code == 0, res.err
    assert _result(res.out)["crs"] == "EPSG:32631"
    with rasterio.open(SAMPLE) as src:
        want = transform_bounds(src.crs, "EPSG:32631", *src.bounds)
    shapes = [v[2] for v in _tiles(tmp_path / "u.gpkg").values()]
    assert min(s.bounds[0] for s in shapes) == pytest.approx(want[0], abs=1.0)
    res = run_cli("annotate", US, "--out", tmp_path / "u.gpkg", "--store-crs", "EPSG:4326")
    assert res.code == 2 and "EPSG:32631" in res.err  # the store keeps its CRS


def test_rasters_named_by_folder_glob_list_and_stac(tmp_path):
    for name in ("b.tif", "a.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert expand_inputs([str(tmp_path)], band_folders=False) == [
        str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert expand_inputs([str(tmp_path / "*.tif")], band_folders=False) == [
        str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    listing = tmp_path / "list.txt"
    listing.write_text("# scenes\nb.tif\n/abs/c.tif\nb.tif\n")
    assert expand_inputs([str(listing), str(tmp_path / "a.tif")], band_folders=False) == [
        str(tmp_path / "b.tif"), "/abs/c.tif", str(tmp_path / "a.tif")]
    stac = tmp_path / "items.json"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"id": "x", "assets": {"visual": {"href": "x_rgb.tif"}, "B04": {"href": "x_b4.tif"}}},
        {"id": "y", "assets": {"image": {"href": "y.tif", "type": "image/tiff"},
                               "meta": {"href": "y.xml"}}}]}))
    assert expand_inputs([str(stac)], band_folders=False) == [
        str(tmp_path / "x_rgb.tif"), str(tmp_path / "y.tif")]
    assert expand_inputs([str(tmp_path)], band_folders=True) == [str(tmp_path)]  # a band folder
    bands = tmp_path / "scene"
    bands.mkdir()
    for name in ("T31_B04.tif", "T31_B08.tif", "T31_B8A.tif"):
        (bands / name).write_bytes(b"")
    assert expand_inputs([str(bands)], band_folders=False) == [str(bands)]  # one scene


def test_a_pattern_matching_nothing_is_refused_with_exit_2(tmp_path, run_cli):
    res = run_cli("annotate", str(tmp_path / "*.tif"), "--out", tmp_path / "x.gpkg")
    assert res.code == 2 and "no file matches" in res.err
    assert not (tmp_path / "x.gpkg").exists()


# -- on a Dask cluster ---------------------------------------------------------------------
def _cluster(n: int = 2):
    distributed = pytest.importorskip("dask.distributed")
    import logging

    return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)


def test_two_local_workers_give_the_sequential_store(tmp_path, run_cli):
    res = run_cli("annotate", SAMPLE, US, "--out", tmp_path / "c.gpkg", "--cluster", "local:2",
                  "--cluster-block", "3", "--overlap", "0.5", "--json-progress")
    assert res.code == 0, res.err
    seq = run_cli("annotate", SAMPLE, US, "--out", tmp_path / "s.gpkg", "--overlap", "0.5",
                  "--json-progress")
    assert seq.code == 0, seq.err
    clustered, sequential = _tiles(tmp_path / "c.gpkg"), _tiles(tmp_path / "s.gpkg")
    assert clustered.keys() == sequential.keys() and len(clustered) >= 40
    assert max(np.abs(clustered[t][3] - sequential[t][3]).max() for t in sequential) < 1e-5
    for raster, seq in zip(_result(res.out)["rasters"], _result(seq.out)["rasters"]):
        # the workers wrote the attention in pieces, one per block; a VRT joins them
        assert raster["attention"].endswith(".vrt")
        with rasterio.open(raster["attention"]) as got, rasterio.open(seq["attention"]) as want:
            assert len(got.files) >= 3 and got.descriptions == want.descriptions  # VRT + 2+
            assert got.transform == want.transform and got.shape == want.shape
            assert np.abs(got.read() - want.read()).max() <= 2 / 4096  # stored to 1/4096


def test_a_re_run_with_every_raster_done_starts_no_cluster(tmp_path, run_cli):
    store = tmp_path / "d.gpkg"
    assert run_cli("annotate", SAMPLE, US, "--out", store).code == 0
    # an address nothing listens on: reaching for a scheduler would fail the job
    res = run_cli("annotate", SAMPLE, US, "--out", store, "--cluster", "tcp://127.0.0.1:9",
                  "--json-progress")
    assert res.code == 0, res.err
    assert [r["outcome"] for r in _result(res.out)["rasters"]] == ["skipped", "skipped"]


def test_a_worker_killed_mid_run_has_its_tiles_recomputed_and_written_once(tmp_path):
    import threading
    import time

    from engine.infer.annotate import AnnotateOptions
    from engine.infer.annotate_many import run_annotate_many
    from engine.progress import Reporter

    cluster = _cluster(2)
    store = tmp_path / "k.gpkg"
    killed = []

    def kill_a_worker_once_tiles_arrive() -> None:
        while not killed:
            time.sleep(0.05)
            try:  # read-only: never create the store before the job does
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
                    n = conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
            except sqlite3.Error:
                continue
            if n >= 4:
                worker = next(iter(cluster.workers.values()))
                os.kill(worker.process.process.pid, signal.SIGKILL)
                killed.append(n)

    killer = threading.Thread(target=kill_a_worker_once_tiles_arrive, daemon=True)
    killer.start()
    try:
        opts = AnnotateOptions(raster=str(SAMPLE), store=store, overlap=0.75, block_tiles=2,
                               attention=False)
        result = run_annotate_many([str(SAMPLE)], opts, Reporter(json_lines=True,
                                   stream=open(os.devnull, "w")), cluster=cluster.scheduler_address)
    finally:
        killed.append(-1)
        cluster.close()
    assert killed[0] > 0 and result["failed"] == 0  # a worker died while tiles were coming
    with sqlite3.connect(store) as conn:
        ids = [r[0] for r in conn.execute("SELECT tile_id FROM tiles")]
    assert len(ids) == len(set(ids)) == result["tiles_written"] > 100  # every tile, once


def test_without_a_cluster_nothing_of_dask_is_imported(tmp_path):
    code = ("import sys; from engine.cli import main; "
            f"rc = main(['annotate', {str(SAMPLE)!r}, {str(US)!r}, '--out', "
            f"{str(tmp_path / 'n.gpkg')!r}]); "
            "assert rc == 0 and not [m for m in sys.modules if m.startswith(('dask', "
            "'distributed'))], rc")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_killed_client_resumes_at_the_block_it_stopped_in(tmp_path, run_cli):
    """The client stopped half way through a raster; the re-run computes only the blocks
    it had not committed, reuses the attention pieces of the others (in an fsspec folder)
    and gives the straight run's store and attention."""
    from engine.errors import JobInterrupted
    from engine.infer.annotate import AnnotateOptions
    from engine.infer.annotate_many import run_annotate_many
    from engine.progress import Reporter

    class StopHalfWay(Reporter):
        def progress(self, stage, done, total):
            super().progress(stage, done, total)
            if stage == "predict" and total and done >= total // 2:
                raise JobInterrupted("stopped by the test")

    cluster = _cluster(2)
    store, url = tmp_path / "k.gpkg", f"file://{tmp_path}/shared/attention"
    opts = AnnotateOptions(raster=str(SAMPLE), store=store, overlap=0.5, block_tiles=3,
                           attention_dir=url)
    log = io.StringIO()
    try:
        with pytest.raises(JobInterrupted):
            run_annotate_many([str(SAMPLE)], opts, StopHalfWay(json_lines=True, stream=log),
                              cluster=cluster.scheduler_address)
        half = len(_tiles(store))
        result = run_annotate_many([str(SAMPLE)], opts, Reporter(json_lines=True, stream=log),
                                   cluster=cluster.scheduler_address)
    finally:
        cluster.close()
    skipped = [json.loads(l)["message"] for l in log.getvalue().splitlines()
               if "done by an earlier run" in l]
    assert 0 < half < len(_tiles(store)) and len(skipped) == 1
    done, total = (int(w) for w in skipped[0].split(": ")[1].split()[:3:2])
    assert 0 < done < total
    assert result["rasters"][0]["attention"] == f"{url}/{result['run_id']}-000-{SAMPLE.stem}.vrt"
    straight = tmp_path / "straight.gpkg"
    seq = _result(run_cli("annotate", SAMPLE, "--out", straight, "--overlap", "0.5",
                          "--json-progress").out)
    resumed, want = _tiles(store), _tiles(straight)
    assert resumed.keys() == want.keys()
    assert max(np.abs(resumed[t][3] - want[t][3]).max() for t in want) < 1e-5
    vrt = result["rasters"][0]["attention"][len("file://"):]
    with rasterio.open(vrt) as got, rasterio.open(seq["attention"]) as ref:
        runs = {Path(f).parent.name.split("-000-")[0] for f in got.files[1:]}
        assert len(runs) == 2  # pieces of the killed run and of the re-run
        assert np.abs(got.read() - ref.read()).max() <= 2 / 4096


def test_a_url_attention_folder_without_a_cluster_is_refused(tmp_path, run_cli):
    res = run_cli("annotate", SAMPLE, US, "--out", tmp_path / "u.gpkg", "--attention-dir",
                  "s3://bucket/attention")
    assert res.code == 2 and "--cluster" in res.err and not (tmp_path / "u.gpkg").exists()


def test_an_attention_url_the_workers_cannot_write_is_refused_before_any_cluster(tmp_path,
                                                                                 run_cli):
    # http(s) is read-only for fsspec; nothing listens at the address either
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "h.gpkg", "--cluster",
                  "tcp://127.0.0.1:9", "--attention-dir", "https://example.org/attention")
    assert res.code == 2 and "cannot write https://" in res.err, res.err
    assert not (tmp_path / "h.gpkg").exists()


@pytest.mark.parametrize("overlap", [0.0, 0.6])
def test_attention_pieces_joined_by_a_vrt_are_the_whole_raster(tmp_path, overlap):
    """What the cluster's workers write, block by block of tile rows, reads back through
    its VRT as the one GeoTIFF this process would write (overlapping tiles included)."""
    from rasterio.windows import Window

    from engine.data.raster import open_raster
    from engine.data.tiling import tile_grid
    from engine.infer.attention_writer import AttentionFrame, AttentionWriter, write_attention_vrt
    from engine.infer.cluster import row_blocks

    info = open_raster(SAMPLE)
    grid = tile_grid(info, Window(0, 0, info.width, info.height), 0.3, 96, overlap)
    frame = AttentionFrame.of(info, grid)
    rng = np.random.default_rng(0)
    maps = {t: rng.random((3, 6, 6)).astype(np.float32) for t in grid}
    whole = AttentionWriter(tmp_path / "whole.tif", frame, ["a", "b", "c"], {})
    for t, m in maps.items():
        whole.write(t, m)
    whole.close()
    blocks = row_blocks(grid, 2 * len(grid.j_range))
    assert len(blocks) > 2
    pieces = []
    for b in blocks:
        path = tmp_path / f"piece{b.index}.tif"
        writer = AttentionWriter(path, frame, ["a", "b", "c"], {}, b.rows)
        for t in grid.tiles_in_rows(b.rows):
            writer.write(t, maps[t])
        writer.close()
        pieces.append((b.rows, str(path)))
    write_attention_vrt(tmp_path / "joined.vrt", frame, ["a", "b", "c"], {}, pieces)
    with rasterio.open(tmp_path / "joined.vrt") as got, rasterio.open(tmp_path / "whole.tif") as want:
        assert got.descriptions == ("a", "b", "c") and got.transform == want.transform
        assert np.array_equal(got.read(), want.read()) and (want.read() >= 0).all()
        for band in (1, 2, 3):  # the pieces' statistics add up to the whole raster's
            for key in ("MINIMUM", "MAXIMUM", "MEAN", "STDDEV", "VALID_PERCENT"):
                got_v = float(got.tags(band)[f"STATISTICS_{key}"])
                assert got_v == pytest.approx(float(want.tags(band)[f"STATISTICS_{key}"]),
                                              rel=1e-4), key
