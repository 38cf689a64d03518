"""A headless QGIS 3.22 opens what the engine writes: the tiles layer and the attention raster."""
from __future__ import annotations

import json

import pytest

from conftest import SAMPLE

qgis_core = pytest.importorskip("qgis.core")


def test_qgis_opens_the_store_and_attention_raster(tmp_path, run_cli, qgis_app):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    store = tmp_path / "s.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--json-progress")
    assert res.code == 0, res.err
    result = [json.loads(l) for l in res.out.splitlines()][-1]
    tiles = QgsVectorLayer(f"{store}|layername=tiles", "tiles", "ogr")
    corrections = QgsVectorLayer(f"{store}|layername=corrections", "corrections", "ogr")
    attention = QgsRasterLayer(result["attention"], "attention")
    try:
        assert tiles.isValid() and corrections.isValid()
        assert tiles.featureCount() == result["tiles_written"]
        assert tiles.crs().authid() == "EPSG:28992"
        names = tiles.fields().names()
        assert "p_water" in names and "top_label" in names
        feature = next(tiles.getFeatures())
        assert feature.geometry().area() == pytest.approx((307 * 0.25) ** 2, rel=1e-6)
        assert attention.isValid() and attention.bandCount() == 17
        assert attention.crs().authid() == "EPSG:28992"
        assert attention.bandName(17).endswith("water")
    finally:
        del tiles, corrections, attention
