"""The real TileLabel panel in a standalone offscreen QGIS, having annotated the sample
raster: what the screenshots and the correction round-trip benchmark both start from."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer  # noqa: E402
from qgis.gui import QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

SAMPLE = ROOT / "resources" / "sample" / "gorinchem_0.25m_rgb.tif"


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

    def activeLayer(self):  # noqa: N802
        return None

    def browserModel(self):  # noqa: N802  (Processing's parameter widgets)
        from qgis.gui import QgsBrowserGuiModel

        if not hasattr(self, "_browser"):
            self._browser = QgsBrowserGuiModel()
        return self._browser


def wait_for(condition, timeout_s: float = 300, poll_s: float = 0.05) -> None:
    end = time.time() + timeout_s
    while not condition():
        QgsApplication.processEvents()
        if time.time() > end:
            raise TimeoutError("the engine job did not finish")
        time.sleep(poll_s)


@contextmanager
def annotated_panel(store: Path) -> Iterator[tuple[object, QgsRasterLayer]]:
    """(panel, raster layer) after the panel annotated the sample raster into ``store``;
    QGIS is shut down cleanly afterwards (drop your layer references inside the block)."""
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
    try:
        dock.raster_combo.setLayer(raster)
        dock.store_widget.setFilePath(str(store))
        dock.annotate()
        wait_for(lambda: dock.last_outcome is not None)
        if dock.last_outcome.error:
            raise SystemExit(dock.last_outcome.error)
        yield dock, raster
    finally:
        dock.disconnect_project()
        QgsProject.instance().removeAllMapLayers()
        del raster
        dock.deleteLater()
        app.exitQgis()
