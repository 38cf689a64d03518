"""The QGIS plugin in a real headless QGIS 3.22: install, panel workflow, Processing."""
from __future__ import annotations

import json
import sqlite3
import sys
import zipfile

import pytest

from conftest import DATA, DEFAULT_MODEL, ROOT, SAMPLE, SAMPLE_TILES, index_reachable

pytest.importorskip("qgis.core")
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402
from qgis.PyQt.QtCore import Qt  # noqa: E402

sys.path.insert(0, str(ROOT))
from qgis_plugin.dock import TileLabelDock  # noqa: E402
from qgis_plugin.layers import find_group  # noqa: E402

TIMEOUT_MS = 180_000


def test_plugin_zip_installs_loads_and_unloads_cleanly(tmp_path, qgis_iface):
    import qgis.utils

    from scripts.build_plugin import build

    archive = build(tmp_path / "tilelabel.zip")
    with zipfile.ZipFile(archive) as z:
        assert {n.split("/")[0] for n in z.namelist()} == {"tilelabel"}
        z.extractall(tmp_path / "plugins")
    sys.path.insert(0, str(tmp_path / "plugins"))
    qgis.utils.plugin_paths.insert(0, str(tmp_path / "plugins"))
    try:
        qgis.utils.updateAvailablePlugins()  # what QGIS does after installing a plugin
        assert "tilelabel" in qgis.utils.available_plugins
        assert qgis.utils.pluginMetadata("tilelabel", "qgisMinimumVersion") == "3.22"
        assert qgis.utils.pluginMetadata("tilelabel", "hasProcessingProvider") == "yes"
        assert qgis.utils.loadPlugin("tilelabel")
        assert qgis.utils.startPlugin("tilelabel")
        plugin = qgis.utils.plugins["tilelabel"]
        assert len(plugin.actions) == 4 and plugin.dock is not None
        assert QgsApplication.processingRegistry().providerById("tilelabel") is not None
        algorithms = {a.name() for a in QgsApplication.processingRegistry()
                      .providerById("tilelabel").algorithms()}
        assert algorithms == {"annotate", "annotate_many", "export", "retrain"}
        assert qgis.utils.unloadPlugin("tilelabel")
        assert QgsApplication.processingRegistry().providerById("tilelabel") is None
        assert plugin.actions == [] and plugin.dock is None
    finally:
        sys.path.remove(str(tmp_path / "plugins"))
        qgis.utils.plugin_paths.remove(str(tmp_path / "plugins"))


@pytest.fixture
def sample_layer(qgis_iface, qgis_new_project):
    layer = QgsRasterLayer(str(SAMPLE), "gorinchem")
    QgsProject.instance().addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    yield layer
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def dock(qgis_iface, qtbot):
    widget = TileLabelDock(qgis_iface)
    qtbot.addWidget(widget)
    widget.engine_python = sys.executable
    qgis_iface.messageBar().clear_messages()
    qgis_iface.messageBar().clearWidgets()
    yield widget
    widget.cancel()
    widget.disconnect_project()


def _annotate(dock, qtbot, layer, store):
    dock.raster_combo.setLayer(layer)
    dock.store_widget.setFilePath(str(store))
    dock.last_outcome = None
    qtbot.mouseClick(dock.annotate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    return dock.last_outcome


def test_annotate_through_the_panel_adds_styled_layers(tmp_path, qtbot, sample_layer, dock):
    outcome = _annotate(dock, qtbot, sample_layer, tmp_path / "gorinchem.gpkg")
    assert outcome.error is None, outcome.error
    group = find_group("gorinchem")
    tiles = dock.tiles_layer
    assert tiles.name() == "gorinchem tiles" and tiles.featureCount() == SAMPLE_TILES
    assert tiles.crs().authid() == "EPSG:28992"
    assert tiles.renderer().type() == "categorizedSymbol"
    assert {c.value() for c in tiles.renderer().categories()} >= {"water", "buildings", "trees"}
    attention = _attention_groups(group)
    assert len(attention) == 1
    nodes = attention[0].findLayers()
    assert len(nodes) == 17 and all(n.layer().isValid() for n in nodes)
    assert sum(n.isVisible() for n in nodes) == 0  # the imagery stays clear at first
    tiles.selectByIds([next(tiles.getFeatures()).id()])
    dock.label_list.setCurrentItem(_row(dock, "water"))  # the label the analyst looks at
    assert [n.layer().name() for n in nodes if n.isVisible()] == ["attention: water"]
    dock.label_list.setCurrentItem(_row(dock, "trees"))
    assert [n.layer().name() for n in nodes if n.isVisible()] == ["attention: trees"]
    # every overlay is see-through: clear where attention is low, half the imagery still
    # showing where it is highest
    for node in nodes:
        items = node.layer().renderer().shader().rasterShaderFunction().colorRampItemList()
        assert max(i.color.alpha() for i in items) <= 130
        assert all(i.color.alpha() == 0 for i in items if i.value <= 0.2)
    assert f"Annotated {SAMPLE_TILES} tiles" in dock.status.text()
    assert not any(n.layer() in _combo_layers(dock.raster_combo) for n in nodes)

    dock.last_outcome = None  # a second click while the job runs starts nothing
    qtbot.mouseClick(dock.annotate_button, Qt.LeftButton)
    assert not dock.annotate_button.isEnabled() and len(dock.jobs) == 1
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert dock.annotate_button.isEnabled()
    layers = QgsProject.instance().mapLayersByName("gorinchem tiles")
    assert len(layers) == 1 and layers[0] is dock.tiles_layer  # re-annotating updates it
    assert len(_attention_groups(group)) == 1  # the new run's overlays replace the old
    assert len(QgsProject.instance().mapLayersByName("attention: water")) == 1


def test_the_panel_annotates_with_the_test_time_augmentation_of_the_settings(
        tmp_path, qtbot, sample_layer, dock):
    dock.settings.tta = "flips"
    try:
        outcome = _annotate(dock, qtbot, sample_layer, tmp_path / "tta.gpkg")
    finally:
        dock.settings.tta = "none"
    assert outcome.error is None, outcome.error
    with sqlite3.connect(tmp_path / "tta.gpkg") as conn:
        params = json.loads(conn.execute("SELECT parameters FROM runs").fetchone()[0])
    assert params["tta"] == "flips"


def _attention_groups(group):
    from qgis.core import QgsLayerTreeGroup

    return [g for g in group.children() if isinstance(g, QgsLayerTreeGroup)
            and g.name().startswith("attention")]


def _combo_layers(combo):
    return [combo.layer(i) for i in range(combo.count())]


def test_cancel_stops_the_engine_and_leaves_the_store_consistent(tmp_path, qtbot, qgis_iface,
                                                                 qgis_new_project, dock):
    from engine.data.vrt import repeat_raster_vrt

    big = QgsRasterLayer(str(repeat_raster_vrt(SAMPLE, tmp_path / "big.vrt", 8, 8)), "big")
    QgsProject.instance().addMapLayer(big)
    qgis_iface.mapCanvas().setDestinationCrs(big.crs())
    qgis_iface.mapCanvas().setExtent(big.extent())
    dock.raster_combo.setLayer(big)
    dock.store_widget.setFilePath(str(tmp_path / "big.gpkg"))
    qtbot.mouseClick(dock.annotate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.progress.value() >= 5, timeout=TIMEOUT_MS)
    assert dock.cancel_button.isEnabled()
    qtbot.mouseClick(dock.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert dock.last_outcome.cancelled and "Cancelled" in dock.status.text()
    assert dock.tiles_layer is not None and dock.tiles_layer.featureCount() > 0  # shown
    with sqlite3.connect(tmp_path / "big.gpkg") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT outcome FROM runs").fetchone()[0] == "interrupted"
        assert 0 < conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] < 1024
    QgsProject.instance().removeAllMapLayers()


def test_engine_error_shows_in_the_message_bar(tmp_path, qtbot, qgis_iface, qgis_new_project, dock):
    coarse = QgsRasterLayer(str(DATA / "landsat8_itaipu_excerpt.tif"), "landsat")
    QgsProject.instance().addMapLayer(coarse)
    qgis_iface.mapCanvas().setDestinationCrs(coarse.crs())
    qgis_iface.mapCanvas().setExtent(coarse.extent())
    outcome = _annotate(dock, qtbot, coarse, tmp_path / "l.gpkg")
    assert "coarser than the model" in outcome.error
    assert any("coarser than the model" in m for m in _bar_errors(qgis_iface))
    assert "coarser than the model" in dock.status.text()
    sample = QgsRasterLayer(str(SAMPLE), "gorinchem")  # a job that succeeds clears it
    QgsProject.instance().addMapLayer(sample)
    qgis_iface.mapCanvas().setDestinationCrs(sample.crs())
    qgis_iface.mapCanvas().setExtent(sample.extent())
    assert _annotate(dock, qtbot, sample, tmp_path / "g.gpkg").error is None
    assert _bar_errors(qgis_iface) == []
    QgsProject.instance().removeAllMapLayers()


def _bar_errors(iface) -> list[str]:
    return [item.text() for item in iface.messageBar().items() if item.level() == Qgis.Critical]


def test_a_stage_of_unknown_length_shows_as_busy_then_the_tile_count(dock):
    dock._on_event({"event": "progress", "stage": "loading model", "done": 0, "total": None})
    assert dock.progress.maximum() == 0 and dock.status.text() == "loading model..."
    dock._on_event({"event": "progress", "stage": "predict", "done": 4, "total": 16})
    assert dock.progress.maximum() == 100 and dock.progress.value() == 25
    assert dock.status.text() == "predict: 4 / 16"


def test_a_drawn_extent_stays_on_the_map_while_it_is_the_extent(dock, qgis_iface):
    from qgis.core import QgsRectangle

    rect = QgsRectangle(10, 20, 110, 90)
    dock.annotate_section.start_drawing()
    dock.annotate_section._extent_drawn(rect)  # what the map tool emits on release
    band = dock.annotate_section.extent_band
    assert band.isVisible() and band.asGeometry().boundingBox() == rect
    assert qgis_iface.mapCanvas().mapTool() is not dock.annotate_section._extent_tool
    dock.extent_combo.setCurrentText("Map canvas extent")
    assert not band.isVisible()
    dock.extent_combo.setCurrentText("Drawn rectangle")
    assert band.isVisible()
    dock.disconnect_project()
    assert dock.annotate_section.extent_band is None


def test_engine_warnings_reach_the_panel_and_the_message_bar(tmp_path, qtbot, qgis_iface,
                                                            qgis_new_project, dock):
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    unnamed = tmp_path / "unnamed.tif"
    with rasterio.open(SAMPLE) as src:
        profile = src.profile | {"width": 400, "height": 400, "photometric": "MINISBLACK"}
        profile.pop("compress", None)
        with rasterio.open(unnamed, "w", **{**profile, "transform": src.window_transform(
                Window(0, 0, 400, 400))}) as dst:
            dst.write(src.read(window=Window(0, 0, 400, 400)))
            dst.colorinterp = [ColorInterp.undefined] * 3
    layer = QgsRasterLayer(str(unnamed), "unnamed")
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.mapCanvas().setDestinationCrs(layer.crs())
    qgis_iface.mapCanvas().setExtent(layer.extent())
    outcome = _annotate(dock, qtbot, layer, tmp_path / "u.gpkg")
    assert outcome.error is None, outcome.error
    warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert any("does not name its bands" in m for m in warnings), warnings

    qgis_iface.messageBar().clear_messages()
    dock.bands_edit.setText("3, 2,1")  # the analyst maps the bands: no more guessing
    assert _annotate(dock, qtbot, layer, tmp_path / "mapped.gpkg").error is None
    assert not any("does not name its bands" in m
                   for m in qgis_iface.messageBar().get_messages(Qgis.Warning))
    with sqlite3.connect(tmp_path / "mapped.gpkg") as conn:
        assert json.loads(conn.execute("SELECT parameters FROM runs").fetchone()[0])["bands"] \
            == [3, 2, 1]
    QgsProject.instance().removeAllMapLayers()


def test_correction_in_the_panel_lands_in_the_store_and_survives_reload(
        tmp_path, qtbot, sample_layer, dock):
    store = tmp_path / "review.gpkg"
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    tiles = dock.tiles_layer
    first = next(tiles.getFeatures())
    tiles.selectByIds([first.id()])
    assert dock.label_list.count() == 17
    water = next(dock.label_list.item(i) for i in range(17)
                 if dock.label_list.item(i).data(Qt.UserRole) == "water")
    dock.last_outcome = None
    water.setCheckState(Qt.Unchecked if water.checkState() == Qt.Checked else Qt.Checked)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert dock.last_outcome.error is None
    with sqlite3.connect(store) as conn:
        status, final = conn.execute("SELECT status, final_labels FROM tiles WHERE tile_id=?",
                                     (first["tile_id"],)).fetchone()
        assert conn.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 1
    assert status == "corrected" and set(final.split("; ")) == set(dock.checked_labels())

    project_file = tmp_path / "review.qgz"
    assert QgsProject.instance().write(str(project_file))
    QgsProject.instance().clear()
    assert dock.tiles_layer is None and not dock.selected_tile_ids()  # no dangling layer
    qtbot.mouseClick(dock.verify_button, Qt.LeftButton)  # refused with a message, no crash
    assert QgsProject.instance().read(str(project_file))
    reopened = QgsProject.instance().mapLayersByName("review tiles")[0]
    feature = next(f for f in reopened.getFeatures() if f["tile_id"] == first["tile_id"])
    assert feature["status"] == "corrected" and feature["final_labels"] == final

    assert dock.tiles_layer is reopened and dock.store_path == str(store.resolve())  # reconnected
    reopened.selectByIds([feature.id()])
    assert dock.label_list.count() == 17
    dock.last_outcome = None
    qtbot.mouseClick(dock.undo_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT status FROM tiles WHERE tile_id=?",
                            (first["tile_id"],)).fetchone()[0] == "predicted"


def _row(dock, label):
    return next(dock.label_list.item(i) for i in range(dock.label_list.count())
                if dock.label_list.item(i).data(Qt.UserRole) == label)


def _finals(store, ids):
    with sqlite3.connect(store) as conn:
        return [conn.execute("SELECT final_labels FROM tiles WHERE tile_id=?", (t,)).fetchone()[0]
                for t in ids]


def test_ticking_a_label_on_a_multi_selection_changes_only_that_label_and_undo_restores(
        tmp_path, qtbot, sample_layer, dock):
    from engine.store import AnnotationStore

    store = tmp_path / "multi#1.gpkg"  # '#' in the name: the plugin must open this very file
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    tiles = dock.tiles_layer
    features = list(tiles.getFeatures())[:2]
    ids = [f["tile_id"] for f in features]
    with AnnotationStore.open(store) as s:
        s.add_correction([ids[0]], ["trees"])
        s.add_correction([ids[1]], ["water", "ship"])
    tiles.dataProvider().reloadData()
    tiles.selectByIds([f.id() for f in features])
    assert _row(dock, "trees").checkState() == Qt.PartiallyChecked  # one of the two
    assert _row(dock, "cars").checkState() == Qt.Unchecked
    dock.last_outcome = None
    _row(dock, "cars").setCheckState(Qt.Checked)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert dock.last_outcome.error is None, dock.last_outcome.error
    assert _finals(store, ids) == ["cars; trees", "cars; ship; water"]
    assert _row(dock, "cars").checkState() == Qt.Checked
    dock.last_outcome = None
    _row(dock, "water").setCheckState(Qt.Unchecked)  # partly checked -> removed from all
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert _finals(store, ids) == ["cars; trees", "cars; ship"]
    for expected in (["cars; trees", "cars; ship; water"], ["trees", "ship; water"]):
        dock.last_outcome = None
        qtbot.mouseClick(dock.undo_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
        assert _finals(store, ids) == expected
    assert not (tmp_path / "multi").exists()  # no stray file from a mis-parsed URI


def _render(layers, extent):
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(100, 100))
    settings.setSelectionColor(QColor(255, 255, 0))  # QGIS's default: opaque yellow
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def test_a_corrected_tile_shows_its_most_probable_label_and_a_selected_tile_its_imagery(
        tmp_path, qtbot, sample_layer, dock):
    from qgis.core import QgsExpression, QgsExpressionContext, QgsExpressionContextUtils

    from engine.store import AnnotationStore

    store = tmp_path / "map.gpkg"
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    tiles = dock.tiles_layer
    feature = max(tiles.getFeatures(), key=lambda f: f["p_water"])
    assert feature["p_water"] > feature["p_airplane"]
    with AnnotationStore.open(store) as s:  # 'airplane' comes first in the vocabulary
        s.add_correction([feature["tile_id"]], ["water", "airplane"])
    tiles.dataProvider().reloadData()
    feature = next(f for f in tiles.getFeatures() if f["tile_id"] == feature["tile_id"])
    assert feature["final_labels"] == "airplane; water"
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(tiles))
    context.setFeature(feature)
    assert QgsExpression(tiles.renderer().classAttribute()).evaluate(context) == "water"
    with AnnotationStore.open(store) as s:
        s.add_correction([feature["tile_id"]], [])
    tiles.dataProvider().reloadData()
    context.setFeature(next(f for f in tiles.getFeatures() if f["tile_id"] == feature["tile_id"]))
    assert QgsExpression(tiles.renderer().classAttribute()).evaluate(context) == "none"

    # a selected tile is an outline in the selection colour; its imagery stays visible
    extent = feature.geometry().boundingBox()
    imagery, unselected = _render([sample_layer], extent), _render([tiles, sample_layer], extent)
    tiles.selectByIds([feature.id()])
    selected = _render([tiles, sample_layer], extent)
    inside = (20, 30)  # away from the outline and the tile's label
    assert selected.pixelColor(*inside) == imagery.pixelColor(*inside)
    assert unselected.pixelColor(*inside) != imagery.pixelColor(*inside)  # the light fill
    assert selected.pixelColor(1, 50).name() == "#ffff00"  # the outline


def test_the_review_queue_walks_unreviewed_tiles_least_confident_first(
        tmp_path, qtbot, sample_layer, dock):
    from qgis_plugin.review_queue import review_order
    from qgis_plugin.store_reader import label_columns, model_thresholds

    store = tmp_path / "queue.gpkg"
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    columns = label_columns(str(store))
    limits = model_thresholds(str(store))
    with sqlite3.connect(store) as conn:
        rows = conn.execute(f"SELECT tile_id, {', '.join(c for _, c in columns)} FROM tiles "
                            "ORDER BY fid").fetchall()
    margins = {r[0]: min(abs(p - limits[l]) for p, (l, _) in zip(r[1:], columns)) for r in rows}
    expected = sorted(margins, key=margins.__getitem__)
    assert review_order(str(store)) == expected and len(expected) == SAMPLE_TILES
    visited = []
    for _ in range(3):
        dock.step_review(1)
        visited.append(dock.selected_tile_ids())
    assert visited == [[t] for t in expected[:3]]
    assert "row " in dock.tile_info.text()  # tiles named by row and column
    dock.step_review(-1)
    assert dock.selected_tile_ids() == [expected[1]]
    dock.last_outcome = None
    dock.mark_verified()  # V on the tile under review: it leaves the queue
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert expected[1] not in review_order(str(store))
    assert f"{SAMPLE_TILES - 1} predicted, 0 corrected, 1 verified" in dock.counts.text()
    probabilities = [float(dock.label_list.item(i).text().split()[1])
                     for i in range(dock.label_list.count())]
    assert probabilities == sorted(probabilities, reverse=True)  # most probable first
    assert "threshold" in dock.label_list.item(0).text()


def test_export_and_retrain_from_the_panel(tmp_path, qtbot, sample_layer, dock):
    store = tmp_path / "train.gpkg"
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    dock.tiles_layer.selectAll()
    dock.last_outcome = None
    qtbot.mouseClick(dock.verify_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    dock.last_outcome = None
    dock.export(str(tmp_path / "export.gpkg"))
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    exported = QgsVectorLayer(f"{tmp_path / 'export.gpkg'}|layername=labelled_tiles", "e", "ogr")
    assert exported.featureCount() == SAMPLE_TILES
    del exported
    # each job reports in its own section: the annotate section keeps its own result
    assert f"Exported {SAMPLE_TILES} tiles" in dock.train_status.text()
    assert f"Annotated {SAMPLE_TILES} tiles" in dock.status.text()
    assert f"{SAMPLE_TILES} tile(s) verified" in dock.review_status.text()

    dock.epochs_spin.setValue(1)
    dock.last_outcome = None
    qtbot.mouseClick(dock.retrain_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert dock.last_outcome.error is None, dock.last_outcome.error
    new_model = dock.last_outcome.result["model"]
    assert dock.model_combo.currentData() == new_model
    assert "New model" in dock.train_status.text() and dock.train_progress.value() == 100
    assert f"Annotated {SAMPLE_TILES} tiles" in dock.status.text()
    spec = json.loads(open(f"{new_model}/model.json").read())
    assert spec["parent"] == json.loads((DEFAULT_MODEL / "model.json").read_text())["model_id"]
    assert _annotate(dock, qtbot, sample_layer, tmp_path / "again.gpkg").error is None
    with sqlite3.connect(tmp_path / "again.gpkg") as conn:
        assert conn.execute("SELECT DISTINCT model_id FROM tiles").fetchone()[0] == spec["model_id"]


@pytest.fixture
def provider(qgis_processing):
    from qgis_plugin.processing_provider import TileLabelProvider

    registered = TileLabelProvider()
    QgsApplication.processingRegistry().addProvider(registered)
    yield registered
    QgsApplication.processingRegistry().removeProvider(registered)


def test_processing_algorithms_run(tmp_path, provider):
    import processing

    store = tmp_path / "p.gpkg"
    result = processing.run("tilelabel:annotate", {"RASTER": str(SAMPLE), "STORE": str(store),
                                                   "BANDS": "1, 2, 3", "TTA": 1,
                                                   "MIN_VALID": 0.0})
    assert result["TILES"] == SAMPLE_TILES + 1  # the corner sliver too
    with sqlite3.connect(store) as conn:
        params = json.loads(conn.execute("SELECT parameters FROM runs").fetchone()[0])
    assert params["bands"] == [1, 2, 3] and params["tta"] == "flips"
    assert params["min_valid"] == 0.0
    with sqlite3.connect(store) as conn:
        ids = [r[0] for r in conn.execute("SELECT tile_id FROM tiles")]
    from engine.store import AnnotationStore
    with AnnotationStore.open(store) as s:
        s.add_correction(ids, None, status="verified")
    out = tmp_path / "x.gpkg"
    exported = processing.run("tilelabel:export", {"STORE": str(store), "OUTPUT": str(out)})
    assert exported["TILES"] == SAMPLE_TILES + 1
    model = tmp_path / "m"
    result = processing.run("tilelabel:retrain", {"STORE": str(store), "EPOCHS": 1,
                                                  "OUTPUT": str(model)})
    assert (model / "model.json").is_file() and result["MODEL_ID"]


def test_processing_annotates_several_rasters_into_one_store(tmp_path, provider,
                                                             qgis_new_project):
    import processing

    good = QgsRasterLayer(str(SAMPLE), "gorinchem")
    us = QgsRasterLayer(str(DATA / "usgs_hro_10325_excerpt.tif"), "us")
    coarse = QgsRasterLayer(str(DATA / "landsat8_itaipu_excerpt.tif"), "landsat")
    store = tmp_path / "region.gpkg"
    result = processing.runAndLoadResults("tilelabel:annotate_many", {
        "RASTERS": [good, us, coarse], "STORE": str(store)})
    assert result["TILES"] == SAMPLE_TILES + 1 and result["FAILED"] == 1  # the 30 m one refused
    with sqlite3.connect(store) as conn:
        crss = dict(conn.execute("SELECT raster_crs, COUNT(*) FROM tiles GROUP BY raster_crs"))
    assert crss == {"EPSG:28992": SAMPLE_TILES, "EPSG:3857": 1}  # the US chip's slivers skipped
    layers = QgsProject.instance().mapLayersByName("region tiles")
    assert len(layers) == 1 and layers[0].featureCount() == SAMPLE_TILES + 1
    QgsProject.instance().removeAllMapLayers()


def test_processing_annotate_defaults_beside_the_raster_and_loads_styled_tiles(
        tmp_path, provider, qgis_new_project):
    import shutil

    import processing

    raster = shutil.copy(SAMPLE, tmp_path / "scene.tif")
    result = processing.runAndLoadResults("tilelabel:annotate", {"RASTER": str(raster)})
    assert result["STORE"] == str(tmp_path / "scene_tilelabel.gpkg")
    layers = QgsProject.instance().mapLayersByName("scene_tilelabel tiles")
    assert len(layers) == 1 and layers[0].featureCount() == SAMPLE_TILES
    assert layers[0].renderer().type() == "categorizedSymbol"  # styled as in the panel
    QgsProject.instance().removeAllMapLayers()


def test_missing_engine_interpreter_is_reported_with_the_install_command(
        qtbot, sample_layer, dock, qgis_iface, monkeypatch):
    import qgis_plugin.dock as dock_module

    monkeypatch.setattr(dock_module, "find_engine_python", lambda configured="": None)
    dock.engine_python = None
    dock.raster_combo.setLayer(sample_layer)
    qtbot.mouseClick(dock.annotate_button, Qt.LeftButton)
    assert any("No TileLabel engine found" in m and "Install engine" in m and "make setup" in m
               for m in _bar_errors(qgis_iface))
    assert not dock.engine_banner.isHidden()  # the panel offers the installer


def test_retrain_on_a_light_engine_offers_to_install_the_training_part(
        tmp_path, qtbot, sample_layer, dock, monkeypatch):
    from qgis.PyQt.QtWidgets import QMessageBox

    store = tmp_path / "light.gpkg"
    assert _annotate(dock, qtbot, sample_layer, store).error is None
    light = tmp_path / "python"  # answers train as an engine installed without PyTorch does
    light.write_text("#!/bin/sh\necho '{\"event\": \"error\", \"message\": \"training needs "
                     "PyTorch, which this engine was installed without\"}'\nexit 2\n")
    light.chmod(0o755)
    dock.engine_python = str(light)
    asked, installs = [], []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    monkeypatch.setattr(dock, "install_engine", lambda part="light": installs.append(part))
    dock.last_outcome = None
    qtbot.mouseClick(dock.retrain_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.last_outcome is not None, timeout=TIMEOUT_MS)
    assert "needs PyTorch" in dock.last_outcome.error
    assert len(asked) == 1 and "install the full engine now" in asked[0]
    assert installs == ["full"]


def test_the_installer_opens_on_the_part_it_is_asked_for(qtbot):
    from qgis_plugin.install_dialog import InstallDialog
    from qgis_plugin.settings import PluginSettings

    for part in ("light", "full"):
        dialog = InstallDialog(PluginSettings(), part=part)
        qtbot.addWidget(dialog)
        assert dialog.part.currentData() == part


def test_the_panel_says_at_once_when_there_is_no_engine(qtbot, qgis_iface, monkeypatch):
    import qgis_plugin.dock as dock_module

    monkeypatch.setattr(dock_module, "find_engine_python", lambda configured="": None)
    widget = TileLabelDock(qgis_iface)
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: widget._discovery is None, timeout=30_000)
    assert not widget.engine_banner.isHidden()
    assert widget.install_engine_button.text() == "Install engine..."
    widget.disconnect_project()


@pytest.mark.skipif(not index_reachable(), reason="the package index (pypi.org) is not reachable")
def test_from_the_zip_alone_the_installer_gets_an_engine_that_annotates_through_the_panel(
        tmp_path, qtbot, qgis_iface, sample_layer):
    import importlib

    from scripts.build_plugin import build

    with zipfile.ZipFile(build(tmp_path / "tilelabel.zip")) as z:
        z.extractall(tmp_path / "plugins")
    sys.path.insert(0, str(tmp_path / "plugins"))
    from qgis_plugin.settings import PluginSettings

    saved = PluginSettings.load()  # the installer stores its engine: put the old one back
    try:
        installer = importlib.import_module("tilelabel.install_dialog")
        settings = importlib.import_module("tilelabel.settings").PluginSettings()
        dialog = installer.InstallDialog(settings, env=tmp_path / "engine-env")
        qtbot.addWidget(dialog)
        assert dialog.start.isEnabled(), dialog.summary.text()  # the zip's wheel, a Python
        dialog.begin()
        qtbot.waitUntil(lambda: dialog.status.text().startswith(("Installed", "Not installed")),
                        timeout=600_000)
        assert dialog.engine_python, dialog.status.text() + dialog.log.toPlainText()[-2000:]
        assert "engine-env" in dialog.engine_python and settings.engine_python == dialog.engine_python
        panel = importlib.import_module("tilelabel.dock").TileLabelDock(qgis_iface)
        qtbot.addWidget(panel)
        panel.engine_python = dialog.engine_python
        outcome = _annotate(panel, qtbot, sample_layer, tmp_path / "zip.gpkg")
        assert outcome.error is None, outcome.error
        assert panel.tiles_layer.featureCount() == SAMPLE_TILES
        panel.disconnect_project()
    finally:
        saved.save()
        sys.path.remove(str(tmp_path / "plugins"))
        for name in [m for m in sys.modules if m == "tilelabel" or m.startswith("tilelabel.")]:
            del sys.modules[name]


def test_an_engine_crash_is_reported_not_frozen(tmp_path, qtbot, sample_layer, dock, qgis_iface):
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    crashing.chmod(0o755)
    dock.engine_python = str(crashing)
    outcome = _annotate(dock, qtbot, sample_layer, tmp_path / "c.gpkg")
    assert "exit code 139" in outcome.error and "Segmentation fault" in outcome.error
    assert any("exit code 139" in m for m in _bar_errors(qgis_iface))


def test_settings_dialog_saves_what_the_analyst_chose(qtbot, tmp_path):
    from qgis_plugin.settings import PluginSettings
    from qgis_plugin.settings_dialog import SettingsDialog

    original = PluginSettings.load()
    dialog = SettingsDialog(PluginSettings.load())
    qtbot.addWidget(dialog)
    try:
        qtbot.mouseClick(dialog.detect, Qt.LeftButton)
        assert dialog.python.filePath()  # the venv's Python can import the engine
        dialog.device.setCurrentText("cpu")
        dialog.batch.setValue(8)
        dialog.tta.setCurrentIndex(dialog.tta.findData("dihedral"))
        dialog.accept()
        saved = PluginSettings.load()
        assert (saved.device, saved.batch_size, saved.tta) == ("cpu", 8, "dihedral")
        assert saved.engine_python == dialog.python.filePath()
    finally:
        original.save()


def test_the_model_list_names_each_model_with_its_held_out_figures(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    doc = {"model_id": "ucm-dev", "metrics": {"val": {}, "test": {"OF1": 0.9, "CF1": 0.93}}}
    (model / "model.json").write_text(json.dumps(doc))
    assert TileLabelDock._model_title(str(model)) == "ucm-dev (test OF1 0.90, CF1 0.93)"
    doc["metrics"]["val"] = {"OF1": 0.88, "CF1": 0.91}
    (model / "model.json").write_text(json.dumps(doc))
    assert TileLabelDock._model_title(str(model)) == "ucm-dev (val OF1 0.88, CF1 0.91)"
