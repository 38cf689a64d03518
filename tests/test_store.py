"""The GeoPackage annotation store: schema, safe label columns, corrections history."""
from __future__ import annotations

import geopandas as gpd
import pytest
from rasterio.crs import CRS

from engine.errors import StoreError
from engine.store import AnnotationStore, TileRecord, label_columns

BIGEARTHNET_SAMPLE = ["Continuous urban fabric", "Non-irrigated arable land",
                      "Fruit trees and berry plantations",
                      "Land principally occupied by agriculture, with significant areas of natural vegetation",
                      "Sea and ocean", 'A label with "quotes" and \'apostrophes\'', "Sea & ocean"]


def test_label_columns_are_safe_unique_sql_names():
    cols = label_columns(BIGEARTHNET_SAMPLE)
    assert cols[0] == "p_continuous_urban_fabric"
    assert cols[4] == "p_sea_and_ocean" and cols[6] == "p_sea_ocean"
    assert len(set(cols)) == len(cols)
    assert all(c.replace("_", "").isalnum() and c.isascii() for c in cols)
    assert all(len(c) <= 52 for c in cols)


def _record(i: int, probs: list[float]) -> TileRecord:
    return TileRecord(f"t{i}", (i * 10.0, 0.0, i * 10.0 + 10, 10.0), "scene.tif",
                      (i * 10, 0, 10, 10), 1.0, False, 1.0, probs, [])


def test_store_keeps_the_real_label_names_and_geopandas_reads_them(tmp_path):
    path = tmp_path / "ben.gpkg"
    with AnnotationStore.create_or_open(path, BIGEARTHNET_SAMPLE, CRS.from_epsg(32633)) as s:
        s.write_tiles([_record(0, [0.1] * 7), _record(1, [0.9] * 7)], "m", "r")
    mapping = gpd.read_file(path, layer="label_columns")
    assert mapping["label"].tolist() == BIGEARTHNET_SAMPLE
    tiles = gpd.read_file(path, layer="tiles")
    assert tiles.crs.to_epsg() == 32633 and len(tiles) == 2
    assert tiles["top_label"].tolist() == [BIGEARTHNET_SAMPLE[0]] * 2
    assert tiles.total_bounds.tolist() == [0.0, 0.0, 20.0, 10.0]


def test_store_with_a_custom_crs_round_trips(tmp_path):
    crs = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=5.1 +k=0.9996 +x_0=500000 +datum=WGS84")
    path = tmp_path / "c.gpkg"
    with AnnotationStore.create_or_open(path, ["a", "b"], crs) as s:
        s.write_tiles([_record(0, [0.2, 0.7])], "m", "r")
    tiles = gpd.read_file(path, layer="tiles")
    assert CRS.from_wkt(tiles.crs.to_wkt()) == crs
    with AnnotationStore.create_or_open(path, ["a", "b"], crs) as s:  # reopens, same CRS
        assert s.tile_count() == 1


def test_corrections_are_history_and_the_latest_wins(tmp_path):
    path = tmp_path / "s.gpkg"
    with AnnotationStore.create_or_open(path, ["trees", "water", "cars"], CRS.from_epsg(3857)) as s:
        s.write_tiles([_record(0, [0.9, 0.1, 0.2])], "m", "r")
        s.add_correction(["t0"], ["water"], author="ana")
        s.add_correction(["t0"], ["water", "trees"], author="ben")
        s.add_correction(["t0"], None, status="verified", author="ana")
        history = s.corrections("t0")
        tile = s.tile("t0")
    assert [h["labels"] for h in history] == ["water", "trees; water", "trees; water"]
    assert [h["author"] for h in history] == ["ana", "ben", "ana"]
    assert tile["status"] == "verified" and tile["final_labels"] == "trees; water"


def test_correction_with_an_unknown_label_is_refused_and_writes_nothing(tmp_path):
    path = tmp_path / "s.gpkg"
    with AnnotationStore.create_or_open(path, ["trees", "water"], CRS.from_epsg(3857)) as s:
        s.write_tiles([_record(0, [0.9, 0.1])], "m", "r")
        with pytest.raises(StoreError, match="unknown label"):
            s.add_correction(["t0"], ["lava"])
        assert s.corrections("t0") == []


def test_a_failed_batch_writes_nothing_of_itself(tmp_path):
    path = tmp_path / "s.gpkg"
    with AnnotationStore.create_or_open(path, ["a", "b"], CRS.from_epsg(3857)) as s:
        s.write_tiles([_record(0, [0.5, 0.5])], "m", "r")
        with pytest.raises(Exception):
            s.write_tiles([_record(1, [0.5, 0.5]), _record(2, [0.5])], "m", "r")  # bad row
        assert s.tile_count() == 1


def test_store_in_another_crs_is_refused(tmp_path):
    path = tmp_path / "s.gpkg"
    AnnotationStore.create_or_open(path, ["a"], CRS.from_epsg(32633)).close()
    with pytest.raises(StoreError, match="another CRS"):
        AnnotationStore.create_or_open(path, ["a"], CRS.from_epsg(32632))


def test_undo_restores_the_previous_state_and_keeps_history(tmp_path):
    path = tmp_path / "s.gpkg"
    with AnnotationStore.create_or_open(path, ["trees", "water", "cars"], CRS.from_epsg(3857)) as s:
        r = _record(0, [0.9, 0.1, 0.2])
        s.write_tiles([TileRecord(r.tile_id, r.bounds, r.raster, r.window, r.gsd_m, r.edge,
                                  r.valid_fraction, r.probabilities, ["trees"])], "m", "r")
        s.add_correction(["t0"], ["water"])
        s.add_correction(["t0"], ["water", "cars"])
        s.undo_last(["t0"])
        assert (s.tile("t0")["final_labels"], s.tile("t0")["status"]) == ("water", "corrected")
        s.undo_last(["t0"])
        assert (s.tile("t0")["final_labels"], s.tile("t0")["status"]) == ("trees", "predicted")
        with pytest.raises(StoreError, match="no correction to undo"):
            s.undo_last(["t0"])
        assert len(s.corrections("t0")) == 4


VALIDATOR = "/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py"


@pytest.mark.skipif(not __import__("os").path.exists(VALIDATOR),
                    reason="GDAL's validate_gpkg.py (Debian python3-gdal) not installed")
def test_store_passes_gdals_geopackage_validator(tmp_path):
    import subprocess

    path = tmp_path / "s.gpkg"
    with AnnotationStore.create_or_open(path, ["a", "b"], CRS.from_epsg(32633)) as s:
        s.write_tiles([_record(0, [0.2, 0.7]), _record(1, [0.9, 0.1])], "m", "r")
        s.write_tiles([_record(1, [0.5, 0.5])], "m", "r2")  # an upsert
        s.conn.execute("UPDATE tiles SET geom = NULL WHERE tile_id = 't0'")
        assert s.conn.execute("SELECT COUNT(*) FROM rtree_tiles_geom").fetchone()[0] == 1
    done = subprocess.run(["/usr/bin/python3", VALIDATOR, str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def _store_with_two_tiles(path):
    s = AnnotationStore.create_or_open(path, ["trees", "water", "cars"], CRS.from_epsg(3857))
    for i, predicted in ((0, ["trees"]), (1, ["water", "cars"])):
        r = _record(i, [0.5, 0.5, 0.5])
        s.write_tiles([TileRecord(r.tile_id, r.bounds, r.raster, r.window, r.gsd_m, r.edge,
                                  r.valid_fraction, r.probabilities, predicted)], "m", "r")
    return s


def test_ticking_a_label_on_several_tiles_keeps_each_tiles_other_labels(tmp_path):
    with _store_with_two_tiles(tmp_path / "s.gpkg") as s:
        s.change_label(["t0", "t1"], "cars", present=True)
        assert s.tile("t0")["final_labels"] == "trees; cars"
        assert s.tile("t1")["final_labels"] == "water; cars"
        s.change_label(["t0", "t1"], "trees", present=False)
        assert s.tile("t0")["final_labels"] == "cars"
        assert s.tile("t1")["final_labels"] == "water; cars"
        assert {s.tile(t)["status"] for t in ("t0", "t1")} == {"corrected"}


def test_undo_reverts_the_last_action_on_every_tile_it_touched(tmp_path):
    with _store_with_two_tiles(tmp_path / "s.gpkg") as s:
        s.change_label(["t0"], "water", present=True)
        s.change_label(["t0", "t1"], "cars", present=False)
        assert s.undo_last() == ["t0", "t1"]
        assert (s.tile("t0")["final_labels"], s.tile("t0")["status"]) == ("trees; water",
                                                                          "corrected")
        assert (s.tile("t1")["final_labels"], s.tile("t1")["status"]) == ("water; cars",
                                                                          "predicted")
        assert s.undo_last() == ["t0"]
        assert (s.tile("t0")["final_labels"], s.tile("t0")["status"]) == ("trees", "predicted")
        with pytest.raises(StoreError, match="no correction to undo"):
            s.undo_last()


def test_a_correction_noted_undo_is_an_ordinary_correction(tmp_path):
    with _store_with_two_tiles(tmp_path / "s.gpkg") as s:
        s.add_correction(["t0"], ["water"])
        s.add_correction(["t0"], ["cars"], note="undo")
        assert s.tile("t0")["final_labels"] == "cars"
        s.undo_last(["t0"])
        assert s.tile("t0")["final_labels"] == "water"  # only the 'undo'-noted row undone
        s.undo_last(["t0"])
        assert s.tile("t0")["final_labels"] == "trees"


def test_a_store_from_before_structured_undo_is_upgraded_with_its_history(tmp_path):
    path = tmp_path / "old.gpkg"
    with _store_with_two_tiles(path) as s:
        for column in ("action_id", "kind", "undoes"):
            s.conn.execute(f"ALTER TABLE corrections DROP COLUMN {column}")
        rows = [("t0", "water", "corrected", ""), ("t0", "cars", "corrected", ""),
                ("t0", "water", "corrected", "undo")]  # the old marker: a note
        s.conn.executemany("INSERT INTO corrections (tile_id, labels, status, note) VALUES "
                           "(?,?,?,?)", rows)
        s.conn.execute("UPDATE tiles SET final_labels='water', status='corrected' "
                       "WHERE tile_id='t0'")
        s.conn.commit()
    with AnnotationStore.open(path) as s:
        s.undo_last(["t0"])  # the old undo cancelled 'cars': undoing now cancels 'water'
        assert (s.tile("t0")["final_labels"], s.tile("t0")["status"]) == ("trees", "predicted")


@pytest.mark.parametrize("bad", ["water; sea", "", " trees"])
def test_label_names_the_text_columns_cannot_hold_are_refused(tmp_path, bad):
    with pytest.raises(StoreError, match="cannot be used"):
        AnnotationStore.create_or_open(tmp_path / "s.gpkg", ["cars", bad], CRS.from_epsg(3857))
    assert not (tmp_path / "s.gpkg").exists()
