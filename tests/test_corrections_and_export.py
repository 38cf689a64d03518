"""Corrections through the CLI (what the plugin calls) and the export job."""
from __future__ import annotations

import csv
import json

import geopandas as gpd
import rasterio

from conftest import SAMPLE


def _tile_ids(store):
    return gpd.read_file(store, layer="tiles")["tile_id"].tolist()


def test_correct_verify_undo_and_export_with_chips(tmp_path, run_cli):
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    ids = _tile_ids(store)
    res = run_cli("correct", store, "--tile", ids[0], "--labels",
                  "water; ship", "--author", "ana", "--json-progress")
    assert res.code == 0, res.err
    assert json.loads(res.out)["tiles"][ids[0]] == {"final_labels": "ship; water",
                                                    "status": "corrected"}
    assert run_cli("correct", store, "--tile", ids[1], "--labels", "trees").code == 0
    assert run_cli("correct", store, "--tile", ids[2], "--verify").code == 0
    assert run_cli("correct", store, "--tile", ids[1], "--undo").code == 0
    res = run_cli("correct", store, "--tile", ids[0], "--labels", "lava")
    assert res.code == 2 and "unknown label(s) lava" in res.err

    out = tmp_path / "export.gpkg"
    res = run_cli("export", store, "--out", out, "--chips", tmp_path / "chips")
    assert res.code == 0, res.err
    exported = gpd.read_file(out, layer="labelled_tiles").set_index("tile_id")
    assert sorted(exported.index) == sorted([ids[0], ids[2]])
    assert exported.loc[ids[0], "labels"] == "ship; water"
    assert exported.loc[ids[0], "l_water"] == 1 and exported.loc[ids[0], "l_trees"] == 0
    assert exported.loc[ids[2], "status"] == "verified"
    assert exported.crs.to_epsg() == 28992
    rows = list(csv.DictReader(open(tmp_path / "chips" / "labels.csv")))
    assert {r["tile_id"] for r in rows} == {ids[0], ids[2]}
    with rasterio.open(tmp_path / "chips" / rows[0]["chip"]) as chip:
        assert chip.crs.to_epsg() == 28992 and chip.count == 3 and chip.width == 307


def test_export_of_a_store_without_reviewed_tiles_is_refused(tmp_path, run_cli):
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    res = run_cli("export", store, "--out", tmp_path / "e.gpkg")
    assert res.code == 2 and "correct or verify tiles first" in res.err
    assert not (tmp_path / "e.gpkg").exists()


def _reviewed_store(tmp_path, run_cli):
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    ids = _tile_ids(store)
    assert run_cli("correct", store, "--tile", ids[0], "--verify").code == 0
    return store, ids


def test_export_onto_its_own_store_is_refused_and_the_store_is_untouched(tmp_path, run_cli):
    store, _ = _reviewed_store(tmp_path, run_cli)
    before = store.read_bytes()
    for extra in ([], ["--overwrite"]):
        res = run_cli("export", store, "--out", store, *extra)
        assert res.code == 2 and "the annotation store itself" in res.err
    assert store.read_bytes() == before


def test_export_never_replaces_an_existing_file_unless_asked(tmp_path, run_cli):
    store, ids = _reviewed_store(tmp_path, run_cli)
    other = tmp_path / "notes.gpkg"
    other.write_text("my notes, not a GeoPackage\n")
    res = run_cli("export", store, "--out", other)
    assert res.code == 2 and "already exists" in res.err and "--overwrite" in res.err
    assert other.read_text() == "my notes, not a GeoPackage\n"
    assert run_cli("export", store, "--out", other, "--overwrite").code == 0
    assert gpd.read_file(other, layer="labelled_tiles")["tile_id"].tolist() == [ids[0]]
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_with_chips_of_a_moved_raster_writes_nothing(tmp_path, run_cli):
    import shutil

    raster = tmp_path / "scene.tif"
    shutil.copy(SAMPLE, raster)
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", raster, "--out", store, "--no-attention").code == 0
    assert run_cli("correct", store, "--tile", _tile_ids(store)[0], "--verify").code == 0
    raster.rename(tmp_path / "moved.tif")
    res = run_cli("export", store, "--out", tmp_path / "e.gpkg", "--chips", tmp_path / "chips")
    assert res.code == 2 and "no longer where the store recorded it" in res.err
    assert not (tmp_path / "e.gpkg").exists() and not (tmp_path / "chips").exists()


def test_ticking_one_label_on_a_multi_selection_through_the_cli(tmp_path, run_cli):
    from engine.store import AnnotationStore

    store, ids = _reviewed_store(tmp_path, run_cli)
    pair = ids[1:3]
    assert run_cli("correct", store, "--tile", pair[0], "--labels", "trees").code == 0
    assert run_cli("correct", store, "--tile", pair[1], "--labels", "water; ship").code == 0
    tiles = [a for t in pair for a in ("--tile", t)]
    assert run_cli("correct", store, *tiles, "--add", "cars").code == 0
    with AnnotationStore.open(store) as s:
        assert [s.tile(t)["final_labels"] for t in pair] == ["cars; trees", "cars; ship; water"]
    assert run_cli("correct", store, *tiles, "--remove", "ship").code == 0
    with AnnotationStore.open(store) as s:
        assert [s.tile(t)["final_labels"] for t in pair] == ["cars; trees", "cars; water"]
    assert run_cli("correct", store, "--undo").code == 0
    assert run_cli("correct", store, "--undo").code == 0  # the whole --add, both tiles
    with AnnotationStore.open(store) as s:
        assert [s.tile(t)["final_labels"] for t in pair] == ["trees", "ship; water"]
        assert s.tile(ids[0])["status"] == "verified"  # an older action, untouched


def test_store_commands_start_without_pytorch(tmp_path, run_cli):
    import subprocess
    import sys

    from conftest import ROOT

    store, ids = _reviewed_store(tmp_path, run_cli)
    probe = ("import sys; from engine.cli import main; "
             f"code = main(['correct', {str(store)!r}, '--tile', {ids[1]!r}, '--add', 'cars']); "
             "assert code == 0; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
