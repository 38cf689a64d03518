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
    res = run_cli("correct", store, "--tile", ids[0], "--tile", ids[1], "--labels",
                  "water; ship", "--author", "ana", "--json-progress")
    assert res.code == 0, res.err
    assert json.loads(res.out)["tiles"][ids[0]] == {"final_labels": "ship; water",
                                                    "status": "corrected"}
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
