"""The TileLabel panel: annotate, review labels, export, retrain.

Every engine call is an :class:`EngineJob` in QGIS's task manager; the panel only
touches layers when a job has finished (on the main thread).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsTask, QgsVectorLayer
from qgis.gui import QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel, QPushButton,
                                 QShortcut, QVBoxLayout, QWidget)

from .annotate_section import AnnotateSection
from .engine_job import EngineJob, JobOutcome
from .i18n import tr
from .layers import add_annotation_layers
from .project_link import open_store_layer, remember_store, remembered_store
from .settings import INSTALL_HINT, PluginSettings, default_model_dir, find_engine_python

from .panel_jobs import PanelJobs
from .panel_review import PanelReview
from .panel_training import PanelTraining
from .review_section import ReviewSection
from .train_section import TrainSection


class TileLabelDock(PanelJobs, PanelReview, PanelTraining, QDockWidget):
    """The panel: its three sections (annotate, review, export and retrain) and what joins
    them (the store, the engine, the project). Running jobs: panel_jobs.py; the review
    loop: panel_review.py; export and retrain: panel_training.py."""

    def __init__(self, iface, parent=None) -> None:
        super().__init__(tr("TileLabel"), parent)
        self.setObjectName("TileLabelDock")
        self.iface = iface
        self.settings = PluginSettings.load()
        self.engine_python: str | None = None
        self.jobs: set[EngineJob] = set()  # running jobs (Cancel stops them all)
        self.last_outcome: JobOutcome | None = None
        self.tiles_layer: QgsVectorLayer | None = None
        self.store_path: str | None = None
        self._updating = False
        self._review_history: list[str] = []
        self.error_items: list[QgsMessageBarItem] = []  # errors shown until resolved
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self._engine_banner())
        self.annotate_section = AnnotateSection(iface)
        self.review_section = ReviewSection()
        self.train_section = TrainSection()
        for section in (self.annotate_section, self.review_section, self.train_section):
            layout.addWidget(section)
            self._expose(section)
        layout.addStretch(1)
        self._wire()
        self.setWidget(body)
        self.refresh_models()
        self.discover_engine()
        project = QgsProject.instance()
        project.readProject.connect(self._project_read)
        project.layersWillBeRemoved.connect(self._layers_removed)
        project.cleared.connect(self._forget_layer)

    def _expose(self, section: QWidget) -> None:
        """The sections' widgets as the dock's own attributes (dock.annotate_button...)."""
        for name, value in vars(section).items():
            if isinstance(value, QWidget) and not hasattr(self, name):
                setattr(self, name, value)

    def _wire(self) -> None:
        self.annotate_button.clicked.connect(self.annotate)
        self.cancel_button.clicked.connect(self.cancel)
        self.label_list.itemChanged.connect(self._label_toggled)
        self.label_list.currentItemChanged.connect(self._label_picked)
        self.verify_button.clicked.connect(self.mark_verified)
        self.undo_button.clicked.connect(self.undo)
        self.open_store_button.clicked.connect(lambda: self.open_store())
        self.previous_button.clicked.connect(lambda: self.step_review(-1))
        self.next_button.clicked.connect(lambda: self.step_review(1))
        self.export_button.clicked.connect(lambda: self.export())
        self.retrain_button.clicked.connect(self.retrain)
        self._shortcuts()

    def _shortcuts(self) -> None:
        """Keys for the review loop, active while the panel has focus."""
        keys = {"N": lambda: self.step_review(1), "P": lambda: self.step_review(-1),
                "V": self.mark_verified, "U": self.undo}
        keys.update({str(k): (lambda k=k: self.toggle_row(k - 1)) for k in range(1, 10)})
        self._shortcut_objects = []
        for key, action in keys.items():
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)
            self._shortcut_objects.append(shortcut)

    def current_extent(self):
        return self.annotate_section.current_extent()

    def disconnect_project(self) -> None:
        """Called by the plugin's unload: stop listening to the project, take the drawn
        extent off the map."""
        self.annotate_section.remove_drawn_extent()
        project = QgsProject.instance()
        for signal, slot in ((project.readProject, self._project_read),
                             (project.layersWillBeRemoved, self._layers_removed),
                             (project.cleared, self._forget_layer)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

    def _project_read(self, *_args) -> None:
        """A project was opened: reconnect to the store it remembers."""
        store = remembered_store()
        if store:
            self.use_store(store, open_store_layer(store))

    def _layers_removed(self, layer_ids) -> None:
        if self.tiles_layer is not None and self._layer_alive() \
                and self.tiles_layer.id() in layer_ids:
            self._forget_layer()

    def _layer_alive(self) -> bool:
        try:
            self.tiles_layer.id()
            return True
        except RuntimeError:  # the C++ layer is gone (project closed)
            return False

    def _forget_layer(self) -> None:
        self.tiles_layer = None
        self.label_list.clear()

    def open_store(self, store: str | None = None) -> None:
        """Review an existing store: the 'Open store...' button."""
        if store is None:
            store, _ = QFileDialog.getOpenFileName(self, tr("Open a TileLabel store"), "",
                                                   "GeoPackage (*.gpkg)")
            if not store:
                return
        try:
            layer = open_store_layer(store)
        except (RuntimeError, OSError, sqlite3.Error) as exc:
            self._error(tr("Not a TileLabel store: {}").format(exc), "review")
            return
        self.use_store(store, layer)

    # -- models ----------------------------------------------------------------------
    def refresh_models(self, select: str | None = None) -> None:
        """Default model, the settings' model, and model versions saved beside the store."""
        found: dict[str, str] = {}
        default = default_model_dir(self.settings)
        found[default] = self._model_title(default) if default else tr("engine's default model")
        if self.store_path:
            for spec in sorted(Path(self.store_path).parent.glob("models/*/model.json")):
                found[str(spec.parent)] = self._model_title(str(spec.parent))
        self.model_combo.clear()
        for path, title in found.items():
            self.model_combo.addItem(title, path)
        if select and select in found:
            self.model_combo.setCurrentIndex(list(found).index(select))

    @staticmethod
    def _model_title(path: str) -> str:
        try:
            doc = json.loads((Path(path) / "model.json").read_text())
        except (OSError, json.JSONDecodeError):
            return Path(path).name
        figures = ""
        for split in ("val", "test"):  # a model refitted on train + val has only test figures
            m = doc.get("metrics", {}).get(split, {})
            if "OF1" in m and "CF1" in m:
                figures = f" ({split} OF1 {m['OF1']:.2f}, CF1 {m['CF1']:.2f})"
                break
        parent = f", from {doc['parent']}" if doc.get("parent") else ""
        return f"{doc.get('model_id', Path(path).name)}{figures}{parent}"

    # -- engine ----------------------------------------------------------------------
    def _engine_banner(self) -> QWidget:
        """Shown while no engine is found: says so at once and offers the installer."""
        self.engine_banner = QWidget()
        row = QHBoxLayout(self.engine_banner)
        row.setContentsMargins(0, 0, 0, 0)
        self.engine_banner_text = QLabel(tr("No TileLabel engine yet: annotate, review and "
                                            "retrain need one."))
        self.engine_banner_text.setWordWrap(True)
        self.install_engine_button = QPushButton(tr("Install engine..."))
        self.install_engine_button.clicked.connect(lambda: self.install_engine())
        row.addWidget(self.engine_banner_text, 1)
        row.addWidget(self.install_engine_button)
        self.engine_banner.setVisible(False)
        return self.engine_banner

    def discover_engine(self) -> None:
        """Look for an engine in a background task (each candidate runs a child Python),
        so opening the panel never waits for it."""
        task = QgsTask.fromFunction(tr("Looking for the TileLabel engine"),
                                    lambda _task, configured: find_engine_python(configured),
                                    self.settings.engine_python,
                                    on_finished=self._engine_found)
        self._discovery = task  # keep a reference until it ends
        QgsApplication.taskManager().addTask(task)

    def _engine_found(self, exception, python=None) -> None:
        self._discovery = None
        if exception is None and python and self.engine_python is None:
            self.engine_python = python
        try:
            self.engine_banner.setVisible(self.engine_python is None)
        except RuntimeError:  # the panel was closed while the task ran
            pass

    def install_engine(self, part: str = "light") -> None:
        from .install_dialog import InstallDialog

        dialog = InstallDialog(self.settings, self, part=part)
        dialog.exec_()
        if dialog.engine_python:
            self.engine_python = dialog.engine_python
            self.engine_banner.setVisible(False)
            self.refresh_models()

    def _engine(self) -> str | None:
        if self.engine_python is None:
            self.engine_python = find_engine_python(self.settings.engine_python)
        if self.engine_python is None:
            self.engine_banner.setVisible(True)
            self._error(tr("No TileLabel engine found: click Install engine... in the "
                           "panel (or ") + INSTALL_HINT + ")")
        return self.engine_python

    # -- annotate ---------------------------------------------------------------------
    def annotate(self) -> None:
        raster = self.raster_combo.currentLayer()
        if raster is None:
            self._error(tr("Choose a raster layer to annotate."))
            return
        extent = self.current_extent()
        if extent is None or extent[0].isEmpty():
            self._error(tr("No extent: draw a rectangle or select polygons first."))
            return
        rect, crs = extent
        store = self.store_widget.filePath() or str(
            Path(raster.source()).with_name(Path(raster.source()).stem + "_tilelabel.gpkg"))
        self.store_widget.setFilePath(store)
        model = self.model_combo.currentData()
        job = ["annotate", raster.source(), "--out", store, *(["--model", model] if model else []),
               "--extent", *(repr(v) for v in (rect.xMinimum(), rect.yMinimum(),
                                               rect.xMaximum(), rect.yMaximum())),
               "--extent-crs", crs.authid() or crs.toWkt(),
               "--overlap", str(self.settings.overlap), "--batch-size",
               str(self.settings.batch_size), "--device", self.settings.device,
               *self.annotate_section.band_arguments(),
               *(["--tta", self.settings.tta] if self.settings.tta != "none" else []),
               *(["--allow-gsd-mismatch"] if self.gsd_check.isChecked() else [])]
        name = Path(store).stem
        task = self._run(tr("Annotating ") + raster.name(), job,
                         lambda result: self._annotated(result, name))
        if task is not None:
            task.store = store

    def _annotated(self, result: dict, name: str) -> None:
        self.store_path = result["store"]
        remember_store(self.store_path)
        self._remove_old_tiles_layer()
        self.tiles_layer, _ = add_annotation_layers(result["store"], result.get("attention"), name)
        self.tiles_layer.selectionChanged.connect(self.show_selection)
        self.raster_combo.setExceptedLayerList(  # attention layers are not rasters to annotate
            [l for l in QgsProject.instance().mapLayers().values()
             if l.name().startswith("attention: ")])
        self.iface.setActiveLayer(self.tiles_layer)
        self.status.setText(
            tr("Annotated {} tiles ({} with no or too little data skipped) in {} s.").format(
                result["tiles_written"], result["tiles_skipped_nodata"], result["seconds"]))
        self._review_history = []
        self.update_counts()
        self.refresh_models(select=self.model_combo.currentData())

    def _remove_old_tiles_layer(self) -> None:
        if self.tiles_layer is not None and self._layer_alive():
            try:
                self.tiles_layer.selectionChanged.disconnect(self.show_selection)
            except (TypeError, RuntimeError):
                pass

    def use_store(self, store: str, layer: QgsVectorLayer) -> None:
        """Review an existing store (e.g. from a reopened project); the project remembers it."""
        self._remove_old_tiles_layer()
        self.store_path, self.tiles_layer = store, layer
        self.store_widget.setFilePath(store)
        layer.selectionChanged.connect(self.show_selection)
        remember_store(store)
        self._review_history = []
        self.update_counts()
        self.refresh_models()
