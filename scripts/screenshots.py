"""Screenshots of the real plugin under offscreen QGIS, for docs/ and the README.

Annotates the sample raster through the TileLabel panel (the engine runs as a child
process, as in QGIS), then saves:
- docs/screenshot_map.png: the scene, the tiles layer styled by label, and the attention
  overlay of one label;
- docs/screenshot_panel.png: the panel with the labels of three selected tiles.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,  # noqa: E402
                       QgsProject, QgsRasterLayer)
from qgis.gui import QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

SAMPLE = ROOT / "resources" / "sample" / "gorinchem_0.25m_rgb.tif"
OVERLAY_LABEL = "buildings"


class Iface:
    """The few QgisInterface calls the panel makes, for a standalone window."""

    def __init__(self) -> None:
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.bar = QgsMessageBar()

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def mainWindow(self):  # noqa: N802
        return self.window

    def messageBar(self):  # noqa: N802
        return self.bar

    def setActiveLayer(self, layer) -> None:  # noqa: N802
        pass


def wait_for(condition, timeout_s: float = 300) -> None:
    end = time.time() + timeout_s
    while not condition():
        QgsApplication.processEvents()
        if time.time() > end:
            raise TimeoutError("the annotate job did not finish")
        time.sleep(0.05)


def render_map(layers, extent, path: Path) -> None:
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(path))


def main() -> None:
    app = QgsApplication([], True)
    app.initQgis()
    from qgis_plugin.dock import TileLabelDock

    iface = Iface()
    raster = QgsRasterLayer(str(SAMPLE), "gorinchem")
    QgsProject.instance().addMapLayer(raster)
    iface.canvas.setDestinationCrs(raster.crs())
    iface.canvas.setExtent(raster.extent())
    dock = TileLabelDock(iface)
    dock.engine_python = sys.executable
    dock.resize(420, 900)
    with tempfile.TemporaryDirectory() as tmp:
        dock.raster_combo.setLayer(raster)
        dock.store_widget.setFilePath(str(Path(tmp) / "gorinchem.gpkg"))
        dock.annotate()
        wait_for(lambda: dock.last_outcome is not None)
        if dock.last_outcome.error:
            raise SystemExit(dock.last_outcome.error)
        tiles = dock.tiles_layer
        overlay = next(l for l in QgsProject.instance().mapLayers().values()
                       if l.name() == f"attention: {OVERLAY_LABEL}")
        render_map([tiles, overlay, raster], raster.extent(), ROOT / "docs" / "screenshot_map.png")
        ids = [f.id() for f in tiles.getFeatures()]
        tiles.selectByIds([ids[5], ids[6], ids[9]])  # a multi-selection: tri-state labels
        dock.show()
        QgsApplication.processEvents()
        dock.grab().save(str(ROOT / "docs" / "screenshot_panel.png"))
        print("wrote docs/screenshot_map.png and docs/screenshot_panel.png")
        QgsProject.instance().removeAllMapLayers()
        del tiles, overlay, raster
    dock.deleteLater()
    app.exitQgis()


if __name__ == "__main__":
    main()
