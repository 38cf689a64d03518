"""Bad input: a clear one-line message naming problem and fix, exit code 2, no traceback,
and any existing store left exactly as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import DATA, DEFAULT_MODEL, SAMPLE


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
