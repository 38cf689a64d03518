"""Annotating real rasters gives stores and attention rasters a GIS analyst can trust."""
from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from conftest import DATA, SAMPLE, SAMPLE_TILES, UCM_LABELS


def _tiles(store):
    return gpd.read_file(store, layer="tiles")


def _result(out: str) -> dict:
    events = [json.loads(line) for line in out.splitlines()]
    return next(e for e in events if e["event"] == "result")


def assert_attention_aligned(att_path, raster_path):
    """Same CRS, pixel size a whole multiple of the raster's, origin on a raster pixel edge."""
    with rasterio.open(att_path) as att, rasterio.open(raster_path) as src:
        assert att.crs == src.crs
        f = att.transform.a / src.transform.a
        assert f == pytest.approx(round(f)) and round(f) >= 1
        assert att.transform.e / src.transform.e == pytest.approx(f)
        col = (att.transform.c - src.transform.c) / src.transform.a
        row = (att.transform.f - src.transform.f) / src.transform.e
        assert col == pytest.approx(round(col), abs=1e-6)
        assert row == pytest.approx(round(row), abs=1e-6)
        values = att.read(masked=True)
        assert values.min() >= 0.0 and values.max() <= 1.0
        return att.descriptions


def test_default_model_annotates_sample_raster_into_store_covering_it(tmp_path, run_cli):
    store = tmp_path / "sample.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--json-progress")
    assert res.code == 0, res.err
    result = _result(res.out)
    tiles = _tiles(store)
    with rasterio.open(SAMPLE) as src:
        assert tiles.crs == src.crs
        raster_box = box(*src.bounds)
    assert len(tiles) == result["tiles_written"] == SAMPLE_TILES
    assert result["tiles_skipped_nodata"] == 1
    # covered but for the bottom-right corner: 79 px (19.75 m) square, skipped (test below)
    uncovered = raster_box.difference(tiles.union_all())
    assert uncovered.bounds == pytest.approx((src.bounds.right - 19.75, src.bounds.bottom,
                                              src.bounds.right, src.bounds.bottom + 19.75),
                                             abs=0.01)
    p_cols = [c for c in tiles.columns if c.startswith("p_")]
    assert len(p_cols) == 17
    assert ((tiles[p_cols] >= 0) & (tiles[p_cols] <= 1)).all().all()
    assert set(tiles["status"]) == {"predicted"}
    labels = assert_attention_aligned(result["attention"], SAMPLE)
    assert list(labels) == result["labels"]
    stages = [e["stage"] for e in map(json.loads, res.out.splitlines())
              if e["event"] == "progress"]
    assert stages[0] == "loading model" and stages[1:] and set(stages[1:]) == {"predict"}


def test_edge_tiles_holding_under_a_quarter_of_real_data_are_skipped_and_counted(
        tmp_path, run_cli):
    """Padding makes up the labels of a sliver (benchmarks/partial_tiles.py): the sample's
    right and bottom tiles hold 26 % of real data and are kept, its corner 7 % and is not,
    unless --min-valid 0 asks for every tile that holds any."""
    kept, every = tmp_path / "kept.gpkg", tmp_path / "every.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", kept, "--no-attention").code == 0
    res = run_cli("annotate", SAMPLE, "--out", every, "--no-attention", "--min-valid", "0",
                  "--json-progress")
    assert res.code == 0, res.err
    assert _result(res.out)["tiles_written"] == SAMPLE_TILES + 1
    shares = {(c, r): v for c, r, v in _tiles(every)[["win_col", "win_row", "valid_fraction"]]
              .itertuples(index=False)}
    written = {(c, r) for c, r in _tiles(kept)[["win_col", "win_row"]].itertuples(index=False)}
    assert set(shares) - written == {(921, 921)} and shares[(921, 921)] < 0.1
    assert min(shares[t] for t in written) > 0.25
    with sqlite3.connect(kept) as conn:
        assert conn.execute("SELECT tiles_skipped_nodata FROM runs").fetchone()[0] == 1


def test_default_model_labels_the_gorinchem_river_tiles_water(tmp_path, run_cli):
    """The sample scene is a river with industrial buildings: a working model says so,
    on the tiles that are mostly river (judged by eye: resources/sample/*.river.json)."""
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store).code == 0
    tiles = _tiles(store)
    labelled = {(c, r): set((labels or "").split("; "))
                for c, r, labels in zip(tiles["win_col"], tiles["win_row"], tiles["labels"])}
    river = json.loads(SAMPLE.with_suffix(".river.json").read_text())["mostly_river"]
    assert [tuple(t) for t in river if "water" not in labelled[tuple(t)]] == []
    assert "buildings" in set().union(*labelled.values())


def test_extent_in_another_crs_is_reprojected(tmp_path, run_cli):
    from rasterio.warp import transform_bounds

    with rasterio.open(SAMPLE) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    sub = (left + 10, bottom + 10, left + 90, bottom + 90)   # 80 m square, SW corner
    lonlat = transform_bounds(crs, "EPSG:4326", *sub)
    store = tmp_path / "e.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--extent", *lonlat,
                  "--extent-crs", "EPSG:4326", "--no-attention")
    assert res.code == 0, res.err
    tiles = _tiles(store)
    assert tiles.crs == crs
    assert tiles.union_all().covers(box(*sub))
    assert len(tiles) <= 4  # 76.8 m tiles: the 80 m square touches at most 2 x 2


def test_web_mercator_chip_uses_ground_metres_not_mercator_units(tmp_path, run_cli):
    """A 0.2 'm' EPSG:3857 pixel at 40.7 N is 0.15 m on the ground: tiles must be larger."""
    raster = DATA / "usgs_hro_10325_excerpt.tif"
    store = tmp_path / "hro.gpkg"
    assert run_cli("annotate", raster, "--out", store, "--no-attention").code == 0
    tiles = _tiles(store)
    with rasterio.open(raster) as src:
        res = src.transform.a
    width_px = tiles["win_width"].iloc[0]
    assert width_px * res * np.cos(np.radians(40.7)) == pytest.approx(76.8, rel=0.05)


def test_naip_four_band_raster_uses_its_rgb_bands(tmp_path, run_cli):
    store = tmp_path / "naip.gpkg"
    res = run_cli("annotate", DATA / "naip_0.6m_milwaukee_airport.tif", "--out", store,
                  "--min-valid", "0")
    assert res.code == 0, res.err
    tiles = _tiles(store)
    # 175 x 143 px at 0.6 m; 76.8 m tiles are 128 px: 2 x 2 tiles, all but the first padded
    assert len(tiles) == 4 and tiles["edge"].tolist() == [0, 1, 1, 1]
    assert set(tiles["top_label"]) <= set(UCM_LABELS)


def test_unnamed_uint16_landsat_bands_are_taken_in_order_with_a_warning(
        tmp_path, run_cli, tiny_model_factory):
    model = tiny_model_factory(gsd_m=30.0, tile_px=32)
    res = run_cli("annotate", DATA / "landsat8_itaipu_excerpt.tif", "--out",
                  tmp_path / "l8.gpkg", "--model", model, "--min-valid", "0")
    assert res.code == 0, res.err
    assert "assuming bands 1,2,3 are red, green, blue" in res.err
    assert len(_tiles(tmp_path / "l8.gpkg")) == 49  # 200 px / 32 px tiles -> 7 x 7


def test_sentinel2_band_files_feed_a_sentinel2_model(tmp_path, run_cli, tiny_model_factory):
    """BigEarthNet L2A bands B04/B03/B02 as a VRT stack, matched to the model by name."""
    patch = DATA / "bigearthnet_v1" / "S2A_MSIL2A_20170613T101031_87_48"
    vrt = tmp_path / "rgb.vrt"
    _stack_vrt([patch / f"{patch.name}_{b}.tif" for b in ("B04", "B03", "B02")],
               ["B04", "B03", "B02"], vrt)
    model = tiny_model_factory(bands=("B02", "B03", "B04"), gsd_m=10.0, tile_px=40)
    res = run_cli("annotate", vrt, "--out", tmp_path / "s2.gpkg", "--model", model,
                  "--json-progress")
    assert res.code == 0, res.err
    assert _result(res.out)["tiles_written"] == 9  # 120 px patch / 40 px tiles


def _stack_vrt(files, names, out):
    with rasterio.open(files[0]) as ds:
        w, h, t, crs = ds.width, ds.height, ds.transform, ds.crs.to_wkt()
    from xml.sax.saxutils import escape
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i + 1}"><Description>{n}</Description>'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{f}</SourceFilename>'
        f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        for i, (f, n) in enumerate(zip(files, names)))
    out.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{escape(crs)}</SRS>'
                   f'<GeoTransform>{t.c},{t.a},{t.b},{t.f},{t.d},{t.e}</GeoTransform>{bands}'
                   '</VRTDataset>')


def test_nodata_only_tiles_are_skipped_and_counted(tmp_path, run_cli, tiny_model_factory):
    """The Landsat 7 excerpt's top-left corner is its nodata collar."""
    model = tiny_model_factory(gsd_m=300.0, tile_px=32)
    store = tmp_path / "l7.gpkg"
    res = run_cli("annotate", DATA / "landsat7_collar_excerpt.tif", "--out", store,
                  "--model", model, "--json-progress")
    assert res.code == 0, res.err
    result = _result(res.out)
    assert result["tiles_skipped_nodata"] > 0
    assert result["tiles_written"] + result["tiles_skipped_nodata"] == result["tiles_total"]
    tiles = _tiles(store)
    assert (tiles["valid_fraction"] > 0).all()
    with sqlite3.connect(store) as conn:
        skipped = conn.execute("SELECT tiles_skipped_nodata FROM runs").fetchone()[0]
    assert skipped == result["tiles_skipped_nodata"]


def test_edge_tiles_are_padded_and_flagged(tmp_path, run_cli):
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    tiles = _tiles(store)
    # 1000 px / 307 px tiles: the fourth row and column reach past the raster (26 % inside;
    # their corner, 7 % inside, is skipped).
    assert tiles["edge"].sum() == 6 and (~tiles["edge"].astype(bool)).sum() == 9
    assert (tiles.loc[tiles["edge"] == 1, "valid_fraction"] < 1).all()


def test_overlap_makes_more_tiles_and_attention_still_aligns(tmp_path, run_cli):
    store = tmp_path / "o.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--overlap", "0.5", "--json-progress",
                  "--min-valid", "0")
    assert res.code == 0, res.err
    assert len(_tiles(store)) == 49  # stride 154 px: columns at 0, 154, ..., 924 -> 7 x 7
    assert_attention_aligned(_result(res.out)["attention"], SAMPLE)


def test_reannotating_updates_predictions_and_keeps_corrections(tmp_path, run_cli):
    from engine.store import AnnotationStore

    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    with AnnotationStore.open(store) as s:
        tid = _tiles(store)["tile_id"].iloc[0]
        s.add_correction([tid], ["water", "ship"], author="analyst")
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    tiles = _tiles(store)
    assert len(tiles) == SAMPLE_TILES  # updated in place, no duplicates
    row = tiles.set_index("tile_id").loc[tid]
    assert row["status"] == "corrected" and row["final_labels"] == "ship; water"
    with AnnotationStore.open(store) as s:
        assert len(s.corrections(tid)) == 1
        runs = s.conn.execute("SELECT outcome FROM runs").fetchall()
    assert [r[0] for r in runs] == ["completed", "completed"]


def test_attention_raster_has_no_empty_edge_column_or_row(tmp_path, run_cli):
    """Overlapping tiles on a sub-extent whose width is not a whole number of attention
    pixels: the last tile of each row and column still fills the raster to its edge."""
    with rasterio.open(SAMPLE) as src:
        left, bottom, _, top = src.bounds
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "o.gpkg", "--overlap", "0.5",
                  "--extent", left + 3, bottom + 7, left + 183.2, top - 5, "--json-progress")
    assert res.code == 0, res.err
    with rasterio.open(_result(res.out)["attention"]) as att:
        band = att.read(1)
    assert (band != -1).any(axis=0).all() and (band != -1).any(axis=1).all()


def test_every_attention_band_declares_the_one_zero_to_one_scale(tmp_path, run_cli):
    """A viewer stretches each label's band over 0-1, the scale all maps share, not over
    the band's own range: a dim map stays dim, and a label absent everywhere (a constant
    band) needs no statistics computed (GDAL warns that its max is not above its min)."""
    from osgeo import gdal

    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "s.gpkg", "--json-progress")
    assert res.code == 0, res.err
    ds = gdal.Open(_result(res.out)["attention"])
    bands = [ds.GetRasterBand(b) for b in range(1, ds.RasterCount + 1)]
    maxima = [band.ComputeRasterMinMax(False)[1] for band in bands]
    assert min(maxima) < 0.5, "the sample has a label whose map stays dim everywhere"
    for band in bands:
        # bForce=False: what the file declares; nothing is computed from the pixels
        low, high, mean, std = band.GetStatistics(False, False)
        values = band.ReadAsArray()
        values = values[values != band.GetNoDataValue()]  # the skipped corner holds none
        assert (low, high) == (0.0, 1.0)
        assert mean == pytest.approx(values.mean(), abs=1e-4)
        assert std == pytest.approx(values.std(), abs=1e-4)
    del bands, ds


def test_store_records_the_raster_by_absolute_path(tmp_path, run_cli, monkeypatch):
    """Export and retraining re-open the raster from the store, from any folder."""
    monkeypatch.chdir(SAMPLE.parent)
    assert run_cli("annotate", SAMPLE.name, "--out", tmp_path / "s.gpkg", "--no-attention").code == 0
    assert set(_tiles(tmp_path / "s.gpkg")["raster"]) == {str(SAMPLE)}
