"""Bad input: a clear one-line message naming problem and fix, exit code 2, no traceback,
and any existing store left exactly as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import DATA, DEFAULT_MODEL, SAMPLE, mounted_tmpfs


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory) -> Path:
    """A real store written by the default model, reused read-only by the tests below."""
    from engine.cli import main

    path = tmp_path_factory.mktemp("store") / "existing.gpkg"
    assert main(["annotate", str(SAMPLE), "--out", str(path), "--no-attention"]) == 0
    return path


@pytest.fixture
def store_copy(existing_store, tmp_path) -> Path:
    copy = tmp_path / "existing.gpkg"
    shutil.copy(existing_store, copy)
    return copy


def assert_refused(res, *phrases: str) -> None:
    assert res.code == 2, res.err
    assert "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_missing_raster(run_cli, store_copy):
    before = digest(store_copy)
    res = run_cli("annotate", "/no/such/scene.tif", "--out", store_copy)
    assert_refused(res, "raster not found", "/no/such/scene.tif")
    assert digest(store_copy) == before


def test_file_that_is_not_a_raster(run_cli, store_copy, tmp_path):
    notes = tmp_path / "notes.tif"
    notes.write_text("field notes, not an image\n")
    before = digest(store_copy)
    assert_refused(run_cli("annotate", notes, "--out", store_copy),
                   "is not a raster GDAL can read")
    assert digest(store_copy) == before


def test_truncated_geotiff(run_cli, store_copy, tmp_path):
    data = (DATA / "landsat8_itaipu_excerpt.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    before = digest(store_copy)
    res = run_cli("annotate", cut, "--out", store_copy)
    assert_refused(res)
    assert "truncated" in res.err or "not a raster" in res.err
    assert digest(store_copy) == before


def test_extent_outside_the_raster(run_cli, store_copy):
    res = run_cli("annotate", SAMPLE, "--out", store_copy, "--extent", "0", "0", "10", "10")
    assert_refused(res, "does not overlap the raster", "EPSG:28992")


def test_extent_in_unknown_crs(run_cli, tmp_path):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--extent", "4.9", "51.8",
                  "5.0", "51.9", "--extent-crs", "EPSG:999999")
    assert_refused(res, "unknown CRS 'EPSG:999999'")
    assert not (tmp_path / "x.gpkg").exists()


def test_zero_area_extent(run_cli, tmp_path):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--extent", "127400",
                  "428000", "127400", "428100")
    assert_refused(res, "zero or negative area")


def test_raster_lacking_a_band_the_model_needs(run_cli, tmp_path, tiny_model_factory):
    model = tiny_model_factory(bands=("red", "green", "blue", "nir"), gsd_m=0.3)
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", model)
    assert_refused(res, "lacks band(s) nir", "--bands")
    assert not (tmp_path / "x.gpkg").exists()


def test_raster_far_coarser_than_the_model_is_refused_with_both_resolutions(run_cli, tmp_path):
    res = run_cli("annotate", DATA / "landsat8_itaipu_excerpt.tif", "--out", tmp_path / "x.gpkg")
    assert_refused(res, "30 m/px", "0.3 m/px", "--allow-gsd-mismatch")


def test_model_directory_without_weights(run_cli, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, broken)
    (broken / "model.safetensors").unlink()
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", broken)
    assert_refused(res, "model.safetensors is missing")


def test_model_directory_with_weights_of_another_model(run_cli, tmp_path, tiny_model_factory):
    broken = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, broken)
    shutil.copy(tiny_model_factory() / "model.safetensors", broken / "model.safetensors")
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", broken)
    assert_refused(res, "does not match", "different models")


def test_model_json_that_is_not_json(run_cli, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, broken)
    (broken / "model.json").write_text("{ not json")
    assert_refused(run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", broken),
                   "is not valid JSON")


def test_store_from_another_label_set(run_cli, store_copy, tiny_model_factory):
    before = digest(store_copy)
    model = tiny_model_factory()  # 5 labels, the store has 17
    res = run_cli("annotate", SAMPLE, "--out", store_copy, "--model", model)
    assert_refused(res, "another label set", "new store")
    assert digest(store_copy) == before


def test_output_path_that_cannot_be_written(run_cli, tmp_path):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "no" / "such" / "dir" / "x.gpkg")
    assert_refused(res, "does not exist")


def test_output_file_that_is_not_a_store_is_left_alone(run_cli, tmp_path):
    other = tmp_path / "roads.gpkg"
    other.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    before = digest(other)
    res = run_cli("annotate", SAMPLE, "--out", other)
    assert res.code == 2 and "Traceback" not in res.err
    assert digest(other) == before


def test_json_progress_reports_errors_as_an_error_event(run_cli, tmp_path):
    res = run_cli("annotate", "/no/such.tif", "--out", tmp_path / "x.gpkg", "--json-progress")
    events = [json.loads(line) for line in res.out.splitlines()]
    assert events[-1]["event"] == "error" and "raster not found" in events[-1]["message"]
    assert res.code == 2


def _float_raster(path: Path, data, transform=None, crs="EPSG:28992") -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data, np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="float32", crs=crs,
                       transform=transform or from_origin(127375, 428250, 0.3, 0.3)) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "blue")[:data.shape[0]]
    return path


def test_nan_pixels_count_as_nodata_and_no_probability_is_null(run_cli, tmp_path):
    import numpy as np
    import sqlite3
    from contextlib import closing

    all_nan = _float_raster(tmp_path / "nan.tif", np.full((3, 512, 512), np.nan))
    res = run_cli("annotate", all_nan, "--out", tmp_path / "a.gpkg", "--no-attention",
                  "--json-progress")
    assert res.code == 0, res.err
    result = json.loads(res.out.splitlines()[-1])
    assert result["tiles_written"] == 0 and result["tiles_skipped_nodata"] == 4
    half = np.random.default_rng(0).random((3, 512, 512)).astype(np.float32)
    half[:, :, :150] = np.nan  # the left tiles keep 106 of 256 columns (41 %)
    partial = _float_raster(tmp_path / "half.tif", half)
    assert run_cli("annotate", partial, "--out", tmp_path / "p.gpkg", "--no-attention").code == 0
    with closing(sqlite3.connect(tmp_path / "p.gpkg")) as conn:
        columns = [r[0] for r in conn.execute("SELECT column_name FROM label_columns")]
        rows = conn.execute(f"SELECT valid_fraction, {', '.join(columns)} FROM tiles").fetchall()
    assert len(rows) == 4 and all(v is not None for row in rows for v in row)
    assert min(r[0] for r in rows) < 0.5  # the NaN half is not counted as data


@pytest.mark.parametrize("degrees", [30, 90])
def test_rotated_geotransforms_are_refused_with_how_to_warp(run_cli, tmp_path, degrees):
    import numpy as np
    from rasterio import Affine

    transform = (Affine.translation(127375, 428250) @ Affine.rotation(degrees)
                 @ Affine.scale(0.3, -0.3))
    raster = _float_raster(tmp_path / "rot.tif", np.ones((3, 300, 300)), transform)
    res = run_cli("annotate", raster, "--out", tmp_path / "r.gpkg")
    assert_refused(res, "rotated geotransform", "gdalwarp")
    assert not (tmp_path / "r.gpkg").exists()


@pytest.mark.parametrize("field, value, phrase", [
    ("gsd_m", "0.3", "'gsd_m' must be a number"),
    ("labels", "water", "'labels' must be a list of names"),
    ("std", [float("nan")] * 3, "'std' values must be positive finite"),
])
def test_model_json_fields_of_the_wrong_type_are_named(run_cli, tmp_path, field, value, phrase):
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL, broken)
    doc = json.loads((broken / "model.json").read_text())
    doc[field] = value
    (broken / "model.json").write_text(json.dumps(doc))
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", broken)
    assert_refused(res, phrase)
    assert not (tmp_path / "x.gpkg").exists()


def test_negative_workers_are_refused_before_the_store_is_made(run_cli, tmp_path):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--workers", "-2")
    assert_refused(res, "--workers must be at least 1")
    assert not (tmp_path / "x.gpkg").exists()


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_a_minimum_share_outside_0_to_1_is_refused_before_the_store_is_made(run_cli, tmp_path,
                                                                          share):
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--min-valid", share)
    assert_refused(res, "--min-valid is a share of the tile, from 0 to 1")
    assert not (tmp_path / "x.gpkg").exists()


def test_attention_dir_naming_a_file_is_refused_before_any_tile(run_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--attention-dir",
                  tmp_path / "notes.txt")
    assert_refused(res, "is a file, not a folder")
    assert not (tmp_path / "x.gpkg").exists() and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a tmpfs, to be remounted read-only; skips where mounting is not
    allowed. (Root ignores file modes, so a real read-only mount it is.)"""
    with mounted_tmpfs(tmp_path / "ro", "2m") as folder:
        yield folder


def _remount_read_only(folder):
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_a_read_only_store_is_refused_and_left_as_it_was(run_cli, existing_store,
                                                         read_only_folder):
    store = read_only_folder / "existing.gpkg"
    shutil.copy(existing_store, store)
    before = digest(store)
    _remount_read_only(read_only_folder)
    res = run_cli("annotate", SAMPLE, "--out", store)
    assert_refused(res, "is not writable")
    res = run_cli("correct", store, "--tile", "x", "--verify")
    assert_refused(res)
    assert "read-only" in res.err or "not writable" in res.err, res.err
    assert digest(store) == before


def test_a_read_only_folder_for_a_new_store_is_refused(run_cli, read_only_folder):
    _remount_read_only(read_only_folder)
    res = run_cli("annotate", SAMPLE, "--out", read_only_folder / "x.gpkg")
    assert_refused(res, "not writable")


def test_a_store_with_the_labels_in_another_order_says_so(run_cli, store_copy, tiny_model_factory):
    from conftest import UCM_LABELS

    model = tiny_model_factory(labels=tuple(reversed(UCM_LABELS)), gsd_m=0.25, tile_px=307,
                               model_id="reversed")
    res = run_cli("annotate", SAMPLE, "--out", store_copy, "--model", model)
    assert_refused(res, "same labels in another order")


def test_a_model_json_cut_to_another_label_count_names_what_disagrees(run_cli, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL, broken)
    doc = json.loads((broken / "model.json").read_text())
    doc["labels"] = doc["labels"][:-1]
    doc["thresholds"] = doc["thresholds"][:-1] if doc.get("thresholds") else None
    (broken / "model.json").write_text(json.dumps(doc))
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "x.gpkg", "--model", broken)
    assert_refused(res, "17 vectors for 16 labels")  # the label embeddings say so first
    doc["label_embeddings"] = doc["label_embeddings"][:-1]
    (broken / "model.json").write_text(json.dumps(doc))
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "y.gpkg", "--model", broken)
    assert_refused(res, "'label_graph' was mined for other labels")


def test_a_damaged_checkpoint_or_backbone_file_is_named(run_cli, tmp_path):
    ucm = f"ucmerced:{DATA / 'ucmerced_mini'}"
    out = tmp_path / "m"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.safetensors").write_bytes(b"\0" * 64)
    (out / "checkpoint" / "state.json").write_text("{}")
    res = run_cli("train", "--dataset", ucm, "--out", out, "--resume", "--epochs", "1",
                  "--image-size", "64", "--freeze-backbone")
    assert_refused(res, "checkpoint", "damaged")
    weights = tmp_path / "resnet50.safetensors"
    weights.write_bytes(b"garbage")
    res = run_cli("train", "--dataset", ucm, "--out", tmp_path / "r", "--backbone", "resnet50",
                  "--backbone-weights", weights, "--epochs", "1")
    assert_refused(res, "resnet50.safetensors", "not a readable safetensors file")


def test_gdal_prints_nothing_of_its_own_for_an_unknown_crs(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", str(SAMPLE), "--out",
                           str(tmp_path / "x.gpkg"), "--extent", "0", "0", "1", "1",
                           "--extent-crs", "EPSG:999999"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown CRS 'EPSG:999999' for --extent-crs; give a code such as EPSG:4326 or "
        "EPSG:32633"]


def test_sigterm_in_the_first_moments_exits_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    from engine.data.vrt import repeat_raster_vrt

    # a 6 x 6 mosaic of the sample (400 tiles): the job is still running at 0.9 s
    mosaic = repeat_raster_vrt(SAMPLE, tmp_path / "mosaic.vrt", 6, 6)
    # SIGTERM at several moments of start-up (imports, model and ONNX Runtime session
    # loading, the first batches): each exits 130; a library's `except Exception` around
    # the session set-up once swallowed it and the job ran to the end on PyTorch
    for delay in (0.3, 0.5, 0.7, 0.9):
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "annotate", str(mosaic),
                                 "--out", str(tmp_path / f"x{delay}.gpkg")], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 130, delay


def test_a_stop_turned_into_an_import_error_still_exits_130(monkeypatch, capsys):
    """A SIGTERM landing in an extension module's import comes out as "ImportError:
    initialization failed" (seen 0.4-0.5 s into an annotate job under load); with the stop
    requested it is the stop, not an internal error."""
    import signal

    from engine import cli, interrupt

    def import_hit_by_the_signal(args, reporter):
        try:
            cli._raise_interrupt(signal.SIGTERM, None)
        except BaseException as exc:  # noqa: BLE001 - what the import machinery does
            raise ImportError("initialization failed") from exc

    parser = cli.build_parser()
    real_parse = parser.parse_args

    def parse_into_the_hit_job(argv):
        args = real_parse(argv)
        args.func = import_hit_by_the_signal
        return args

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", parse_into_the_hit_job)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(["annotate", str(SAMPLE), "--out", "x.gpkg"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        interrupt.clear()
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_stop_whose_raise_is_swallowed_still_stops_the_job_with_130(tmp_path, monkeypatch):
    """Python drops an exception raised inside a finaliser; a SIGTERM landing there must
    still stop the job (interrupt.py): the next progress step raises, the run is recorded
    as interrupted, the exit code is 130."""
    import signal
    import sqlite3

    from engine import cli, interrupt
    from engine.progress import Reporter

    real_progress = Reporter.progress
    calls = {"n": 0}

    def progress_with_a_swallowed_sigterm(self, stage, done, total):
        calls["n"] += 1
        if calls["n"] == 2:  # mid-job: the handler's raise is lost, as in a __del__
            try:
                cli._raise_interrupt(signal.SIGTERM, None)
            except BaseException:  # noqa: BLE001 - what a finaliser context does
                pass
        return real_progress(self, stage, done, total)

    monkeypatch.setattr(Reporter, "progress", progress_with_a_swallowed_sigterm)
    previous = signal.getsignal(signal.SIGTERM)
    store = tmp_path / "x.gpkg"
    try:
        code = cli.main(["annotate", str(SAMPLE), "--out", str(store), "--json-progress"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        interrupt.clear()
    assert code == 130
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
