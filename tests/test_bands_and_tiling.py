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
