"""The panel's Annotate section: raster, model, extent, store, and the job's progress.

Widgets and what they say about the job to run; the dock starts the job."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsGeometry, QgsMapLayerProxyModel,
                       QgsRectangle, QgsWkbTypes)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox, QgsMapToolExtent, QgsRubberBand
from qgis.PyQt.QtCore import QRegularExpression
from qgis.PyQt.QtGui import QColor, QRegularExpressionValidator
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout,
                                 QLabel, QLineEdit, QProgressBar, QPushButton)

from .i18n import tr

EXTENT_CANVAS, EXTENT_DRAWN, EXTENT_POLYGONS = "Map canvas extent", "Drawn rectangle", \
    "Selected polygons of a layer"


class AnnotateSection(QGroupBox):
    def __init__(self, iface) -> None:
        super().__init__(tr("Annotate"))
        self.iface = iface
        self.drawn_extent: QgsRectangle | None = None
        self._extent_tool: QgsMapToolExtent | None = None
        self._previous_tool = None
        form = QFormLayout(self)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow(tr("Raster"), self.raster_combo)
        self.model_combo = QComboBox()
        form.addRow(tr("Model"), self.model_combo)
        self.extent_combo = QComboBox()
        self.extent_combo.addItems([EXTENT_CANVAS, EXTENT_DRAWN, EXTENT_POLYGONS])
        self.extent_band: QgsRubberBand | None = None
        self.extent_combo.currentTextChanged.connect(self._show_drawn_extent)
        self.draw_button = QPushButton(tr("Draw"))
        self.draw_button.clicked.connect(self.start_drawing)
        row = QHBoxLayout()
        row.addWidget(self.extent_combo, 1)
        row.addWidget(self.draw_button)
        form.addRow(tr("Extent"), row)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        form.addRow(tr("Polygons"), self.polygon_combo)
        self.store_widget = QgsFileWidget()
        self.store_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.store_widget.setFilter("GeoPackage (*.gpkg)")
        form.addRow(tr("Store"), self.store_widget)
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText(tr("matched by band name; or e.g. 3,2,1"))
        self.bands_edit.setToolTip(tr("The raster's band numbers that feed the model's bands, "
                                      "in the model's order (red, green, blue for the RGB "
                                      "models): e.g. 3,2,1 for a blue-green-red file"))
        self.bands_edit.setValidator(QRegularExpressionValidator(QRegularExpression(
            r"^\s*\d+(\s*,\s*\d+)*\s*$")))
        form.addRow(tr("Bands"), self.bands_edit)
        self.gsd_check = QCheckBox(tr("Annotate even if the raster's resolution is far from "
                                      "the model's"))
        form.addRow(self.gsd_check)
        self.annotate_button = QPushButton(tr("Annotate extent"))
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.annotate_button, 1)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)

    def start_drawing(self) -> None:
        canvas = self.iface.mapCanvas()
        self._previous_tool = canvas.mapTool()
        self._extent_tool = QgsMapToolExtent(canvas)
        self._extent_tool.extentChanged.connect(self._extent_drawn)
        canvas.setMapTool(self._extent_tool)

    def _extent_drawn(self, rect: QgsRectangle) -> None:
        self.drawn_extent = rect
        self.extent_combo.setCurrentText(EXTENT_DRAWN)
        canvas = self.iface.mapCanvas()
        canvas.unsetMapTool(self._extent_tool)
        if self._previous_tool is not None:  # give the analyst their tool back
            canvas.setMapTool(self._previous_tool)
        self._show_drawn_extent()

    def _show_drawn_extent(self, *_args) -> None:
        """The drawn rectangle stays on the map (an outline) while it is the extent."""
        if self.extent_band is None:
            self.extent_band = QgsRubberBand(self.iface.mapCanvas(), QgsWkbTypes.PolygonGeometry)
            self.extent_band.setStrokeColor(QColor(0, 120, 255))
            self.extent_band.setFillColor(QColor(0, 0, 0, 0))
            self.extent_band.setWidth(2)
        drawn = self.extent_combo.currentText() == EXTENT_DRAWN and self.drawn_extent
        if drawn:
            self.extent_band.setToGeometry(QgsGeometry.fromRect(self.drawn_extent), None)
        self.extent_band.setVisible(bool(drawn))

    def remove_drawn_extent(self) -> None:
        if self.extent_band is not None:
            self.iface.mapCanvas().scene().removeItem(self.extent_band)
            self.extent_band = None

    def current_extent(self) -> tuple[QgsRectangle, QgsCoordinateReferenceSystem] | None:
        canvas = self.iface.mapCanvas()
        source = self.extent_combo.currentText()
        if source == EXTENT_DRAWN:
            return (self.drawn_extent, canvas.mapSettings().destinationCrs()) \
                if self.drawn_extent else None
        if source == EXTENT_POLYGONS:
            layer = self.polygon_combo.currentLayer()
            if layer is None or not layer.selectedFeatureCount():
                return None
            return layer.boundingBoxOfSelected(), layer.crs()
        return canvas.extent(), canvas.mapSettings().destinationCrs()

    def band_arguments(self) -> list[str]:
        """``--bands 3,2,1`` when the analyst mapped the bands by hand, else nothing."""
        bands = ",".join(b.strip() for b in self.bands_edit.text().split(",") if b.strip())
        return ["--bands", bands] if bands else []
