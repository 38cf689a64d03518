"""Band matching and the ground-unit tile grid."""
from __future__ import annotations

import pytest
import rasterio

from conftest import DATA, SAMPLE
from engine.data.bands import canonical, match_bands
from engine.data.raster import open_raster, pixel_scaling, sentinel2_offset
from engine.data.tiling import extent_window, tile_grid
from engine.errors import RasterError


@pytest.mark.parametrize("name,expected", [("Red", "red"), ("b4", "B04"), ("B04", "B04"),
                                           ("band 8a", "B8A"), ("NIR", "nir"), ("B12", "B12")])
def test_band_names_are_canonicalised(name, expected):
    assert canonical(name) == expected


def test_bands_match_by_description_in_model_order():
    m = match_bands(["B02", "B03", "B04"], ["B04", "B03", "B02"], ["gray"] * 3)
    assert m.indexes == [3, 2, 1] and not m.assumed_order


def test_rgb_model_matches_sentinel2_named_bands_and_colour_interpretation():
    assert match_bands(["red", "green", "blue"], ["B02", "B03", "B04", "B08"],
                       ["gray"] * 4).indexes == [3, 2, 1]
    assert match_bands(["red", "green", "blue"], [None] * 4,
                       ["red", "green", "blue", "alpha"]).indexes == [1, 2, 3]


def test_explicit_band_mapping_wins_and_is_checked():
    assert match_bands(["red", "green", "blue"], ["a", "b", "c"], ["gray"] * 3,
                       explicit=[3, 2, 1]).indexes == [3, 2, 1]
    with pytest.raises(RasterError, match="raster has bands 1..3"):
        match_bands(["red", "green", "blue"], [None] * 3, ["gray"] * 3, explicit=[1, 2, 4])


def test_sentinel2_processing_baseline_4_uses_the_minus_1000_offset():
    assert sentinel2_offset({"PROCESSING_BASELINE": "04.00"}) == -1000.0
    assert sentinel2_offset({"PROCESSING_BASELINE": "02.09"}) == 0.0
    assert sentinel2_offset({"BOA_ADD_OFFSET_B2": "-1000"}) == -1000.0


def test_sentinel2_l2a_uint16_is_scaled_to_reflectance():
    patch = DATA / "bigearthnet_v1" / "S2A_MSIL2A_20170613T101031_87_48"
    info = open_raster(patch / f"{patch.name}_B04.tif")
    scaling = pixel_scaling(info, [1], ["B04"])
    with rasterio.open(info.path) as ds:
        dn = ds.read()
    unit = scaling.apply(dn)
    assert unit.mean() == pytest.approx(dn.mean() / 10000, rel=1e-5)


def test_tiles_are_cut_in_ground_units():
    info = open_raster(SAMPLE)  # 0.25 m pixels
    grid = tile_grid(info, extent_window(info, None, None), model_gsd_m=0.3, tile_px=256)
    assert (grid.size_x, grid.size_y) == (307, 307)  # 76.8 m / 0.25 m
    assert len(grid) == 16


def test_grid_is_anchored_to_the_raster_so_subextents_share_tile_ids():
    info = open_raster(SAMPLE)
    left, bottom, right, top = info.bounds
    whole = {(t.grid_i, t.grid_j) for t in tile_grid(info, extent_window(info, None, None), 0.3, 256)}
    part = tile_grid(info, extent_window(info, (left + 100, bottom + 100, left + 150,
                                                bottom + 150), None), 0.3, 256)
    assert {(t.grid_i, t.grid_j) for t in part} <= whole
    assert len(part) in (1, 2, 4)


def test_gdal_generic_band_names_are_not_sentinel2_names():
    # "Band 4" of a 4-band NAIP-like file is not B04 (red): bands are taken in order
    m = match_bands(["red", "green", "blue"], ["Band 1", "Band 2", "Band 3", "Band 4"],
                    ["gray", "undefined", "undefined", "undefined"])
    assert m.indexes == [1, 2, 3] and m.assumed_order


@pytest.mark.parametrize("epsg,factor", [(27700, 1.0), (2056, 1.0), (32633, 1.0)])
def test_transverse_and_oblique_mercator_grids_are_true_to_scale(tmp_path, epsg, factor):
    import numpy as np
    from rasterio.transform import from_origin

    path = tmp_path / "r.tif"
    origin = {27700: (400000, 300000), 2056: (2600000, 1200000), 32633: (500000, 5000000)}[epsg]
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs=f"EPSG:{epsg}", transform=from_origin(*origin, 0.25, 0.25)) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    assert open_raster(path).ground_resolution_m() == pytest.approx((0.25 * factor,) * 2)
