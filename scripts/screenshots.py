"""Screenshots of the real plugin under offscreen QGIS, for docs/ and the README.

Annotates the sample raster through the TileLabel panel (the engine runs as a child
process, as in QGIS), then saves:
- docs/screenshot_map.png: the scene, the tiles layer styled by label, and the attention
  overlay of one label;
- docs/screenshot_panel.png: the panel with the labels of three selected tiles;
- docs/screenshot_review_map.png: the map with those three tiles selected (outlines);
- docs/screenshot_processing.png: the Processing dialog of "Annotate raster".

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,  # noqa: E402
                       QgsProject)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402

from scripts.panel_session import annotated_panel  # noqa: E402

OVERLAY_LABEL = "buildings"


def render_map(layers, extent, path: Path) -> None:
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor("white"))
    settings.setSelectionColor(QColor(255, 255, 0))  # QGIS's default selection colour
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(path))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            annotated_panel(Path(tmp) / "gorinchem.gpkg") as (dock, raster):
        dock.resize(420, 900)
        tiles = dock.tiles_layer
        overlay = next(l for l in QgsProject.instance().mapLayers().values()
                       if l.name() == f"attention: {OVERLAY_LABEL}")
        render_map([tiles, overlay, raster], raster.extent(), ROOT / "docs" / "screenshot_map.png")
        ids = [f.id() for f in tiles.getFeatures()]
        tiles.selectByIds([ids[5], ids[6], ids[9]])  # a multi-selection: tri-state labels
        dock.show()
        QgsApplication.processEvents()
        dock.grab().save(str(ROOT / "docs" / "screenshot_panel.png"))
        render_map([tiles, raster], raster.extent(), ROOT / "docs" / "screenshot_review_map.png")
        processing_dialog(raster, dock.iface).grab().save(str(ROOT / "docs" / "screenshot_processing.png"))
        print("wrote docs/screenshot_map.png, screenshot_panel.png, screenshot_review_map.png "
              "and screenshot_processing.png")
        del tiles, overlay, raster


def processing_dialog(raster, iface):
    """The Processing dialog of TileLabel's "Annotate raster", on the sample raster."""
    import qgis.utils

    qgis.utils.iface = qgis.utils.iface or iface  # Processing's dialogs read it on import
    sys.path.append("/usr/share/qgis/python/plugins")  # where QGIS keeps Processing
    from processing.core.Processing import Processing

    from qgis_plugin.processing_provider import TileLabelProvider

    Processing.initialize()
    provider = TileLabelProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    import processing

    dialog = processing.createAlgorithmDialog("tilelabel:annotate", {"RASTER": raster.id()})
    dialog.resize(1040, 640)
    dialog.show()
    QgsApplication.processEvents()
    return dialog


if __name__ == "__main__":
    main()
