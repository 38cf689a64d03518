"""The TileLabel panel: annotate, review labels, export, retrain.

Every engine call is an :class:`EngineJob` in QGIS's task manager; the panel only
touches layers when a job has finished (on the main thread).
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsExpression,
                       QgsFeatureRequest, QgsProject, QgsTask, QgsVectorLayer)
from qgis.gui import QgsMessageBarItem
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel,
                                 QListWidgetItem, QMessageBox, QProgressBar, QPushButton,
                                 QShortcut, QVBoxLayout, QWidget)

from .annotate_section import AnnotateSection
from .engine_job import EngineJob, JobOutcome
from .i18n import tr
from .layers import add_annotation_layers, show_attention
from .review_queue import review_order, status_counts
from .project_link import open_store_layer, remember_store, remembered_store
from .store_reader import (label_columns, latest_model, model_thresholds, split_labels,
                           tile_name)
from .settings import INSTALL_HINT, PluginSettings, default_model_dir, find_engine_python

from .review_section import ReviewSection
from .train_section import TrainSection


FEW_REVIEWED = 20  # below this many reviewed tiles, Retrain warns
LIGHT_ENGINE_REFUSAL = "needs PyTorch"  # what a light engine's train says (engine/cli.py)


def _val_metrics(model_dir: str | None) -> dict:
    try:
        doc = json.loads((Path(model_dir) / "model.json").read_text()) if model_dir else {}
    except (OSError, ValueError):
        return {}
    val = doc.get("metrics", {}).get("val", {})
    return val if {"mAP_macro", "OF1", "CF1"} <= set(val) else {}


class TileLabelDock(QDockWidget):
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
        val = doc.get("metrics", {}).get("val", {})
        figures = f" (val OF1 {val['OF1']:.2f}, CF1 {val['CF1']:.2f})" if "OF1" in val else ""
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

    def _view(self, section: str) -> tuple[QProgressBar | None, QLabel]:
        """The progress bar and status line of a panel section: each job reports in the
        section it was started from."""
        return {"annotate": (self.progress, self.status),
                "review": (None, self.review_status),
                "train": (self.train_progress, self.train_status)}[section]

    def _error(self, message: str, section: str = "annotate") -> None:
        """An error: in its section and in QGIS's message bar until it is resolved (the
        next job that succeeds, or a newer error, clears it)."""
        self._view(section)[1].setText(message)
        self.clear_errors()
        item = QgsMessageBarItem("TileLabel", message, Qgis.Critical, 0)
        self.error_items.append(item)
        self.iface.messageBar().pushItem(item)

    def clear_errors(self) -> None:
        bar = self.iface.messageBar()
        for item in self.error_items:
            if not sip.isdeleted(item):  # the analyst may have closed it already
                bar.popWidget(item)
        self.error_items.clear()

    def _run(self, description: str, job: list[str], on_done, exclusive: bool = True,
             section: str = "annotate") -> EngineJob | None:
        """Start an engine job reporting in ``section``. An ``exclusive`` one (annotate,
        export, retrain) disables those buttons until it ends, so a double click never
        starts two jobs on a store."""
        python = self._engine()
        if python is None:
            return None
        task = EngineJob(description, python, job)
        task.section, task.exclusive = section, exclusive
        task.signals.event.connect(lambda event: self._on_event(event, task))
        task.signals.done.connect(lambda outcome: self._finished(task, outcome, on_done))
        self.jobs.add(task)
        if exclusive:
            self._set_jobs_enabled(False)
        bar, label = self._view(section)
        if bar is not None:
            bar.setRange(0, 100)
            bar.setValue(0)
        self.cancel_button.setEnabled(True)
        label.setText(description + "...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _on_event(self, event: dict, task: EngineJob | None = None) -> None:
        section = getattr(task, "section", "annotate")
        bar, label = self._view(section)
        if event.get("event") == "progress" and event.get("total"):
            if bar is not None:
                bar.setRange(0, 100)
                bar.setValue(int(100 * event["done"] / event["total"]))
            label.setText(f"{event['stage']}: {event['done']} / {event['total']}")
        elif event.get("event") == "progress":  # a stage of unknown length
            if bar is not None:
                bar.setRange(0, 0)  # busy
            label.setText(f"{event['stage']}...")
        elif event.get("event") == "log" and "epoch_metrics" in event:
            label.setText(event["message"])
        elif event.get("event") == "log" and event.get("level") == "warning":
            self.warn(event["message"], section)

    def warn(self, message: str, section: str = "annotate") -> None:
        """An engine warning: in its section and QGIS's message bar (it fades)."""
        self._view(section)[1].setText(tr("Warning: ") + message)
        self.iface.messageBar().pushMessage("TileLabel", message, level=Qgis.Warning,
                                            duration=15)

    def _set_jobs_enabled(self, enabled: bool) -> None:
        for button in (self.annotate_button, self.export_button, self.retrain_button):
            button.setEnabled(enabled)

    def _finished(self, task: EngineJob, outcome: JobOutcome, on_done) -> None:
        self.jobs.discard(task)
        section = getattr(task, "section", "annotate")
        bar, label = self._view(section)
        if bar is not None:
            bar.setRange(0, 100)  # no longer busy
            bar.setValue(100)
        self.cancel_button.setEnabled(bool(self.jobs))
        if not any(getattr(j, "exclusive", False) for j in self.jobs):
            self._set_jobs_enabled(True)
        self._set_review_enabled(True)
        self.last_outcome = outcome
        if outcome.cancelled:
            label.setText(tr("Cancelled; the store keeps every tile written before.")
                          if section == "annotate" else tr("Cancelled; nothing was changed."))
            self._show_partial(task)
            return
        if outcome.error:
            self._error(outcome.error, section)
            if getattr(task, "needs_training", False) and LIGHT_ENGINE_REFUSAL in outcome.error:
                self.offer_training_install()
            return
        self.clear_errors()
        on_done(outcome.result or {})

    def _show_partial(self, task: EngineJob) -> None:
        """After a cancelled annotate: show the tiles it committed."""
        store = getattr(task, "store", None)
        if store and Path(store).is_file():
            try:
                self.use_store(store, open_store_layer(store))
                self.tiles_layer.dataProvider().reloadData()
                self.tiles_layer.triggerRepaint()
            except (RuntimeError, sqlite3.Error):
                pass  # cancelled before the store had its tables

    def cancel(self) -> None:
        for task in list(self.jobs):
            task.cancel()

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
        self.status.setText(tr("Annotated {} tiles ({} nodata skipped) in {} s.").format(
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

    # -- review -----------------------------------------------------------------------
    def selected_tile_ids(self) -> list[str]:
        if self.tiles_layer is None or not self._layer_alive():
            return []
        return [f["tile_id"] for f in self.tiles_layer.selectedFeatures()]

    def show_selection(self, *_args) -> None:
        """One row per label, most probable first (on the first selected tile), with the
        model's decision threshold: checked when every selected tile holds the label,
        partly checked when some do, unchecked when none. The scroll position is kept."""
        features = (self.tiles_layer.selectedFeatures()
                    if self.tiles_layer is not None and self._layer_alive() else [])
        scroll = self.label_list.verticalScrollBar().value()
        self._updating = True
        self.label_list.clear()
        if features and self.store_path:
            first = features[0]
            thresholds = model_thresholds(self.store_path)
            finals = [set(split_labels(f["final_labels"])) for f in features]
            rows = sorted(label_columns(self.store_path), key=lambda lc: -(first[lc[1]] or 0))
            for label, column in rows:
                holding = sum(label in final for final in finals)
                limit = thresholds.get(label)
                text = f"{label}  {first[column]:.2f}" + (f"  (threshold {limit:.2f})"
                                                          if limit is not None else "")
                item = QListWidgetItem(text)
                item.setData(Qt.UserRole, label)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if holding == len(finals) else
                                   Qt.PartiallyChecked if holding else Qt.Unchecked)
                self.label_list.addItem(item)
            self.tile_info.setText(tr("{} tile(s) selected; first: {} ({})").format(
                len(features), tile_name(first["tile_id"]), first["status"]))
        else:
            self.tile_info.setText(tr("Select tiles on the map or in the attribute table."))
        self.label_list.verticalScrollBar().setValue(scroll)
        self._updating = False

    def step_review(self, direction: int) -> None:
        """Select and zoom to the next (or previous) tile of the review queue."""
        if not self.store_path or self.tiles_layer is None or not self._layer_alive():
            self._error(tr("Annotate or open a TileLabel store first."), "review")
            return
        if direction > 0 or not self._review_history:
            queue = [t for t in review_order(self.store_path) if t not in self._review_history]
            if not queue:
                self.review_status.setText(tr("Every tile is reviewed."))
                return
            self._review_history.append(queue[0])
            tile = queue[0]
        else:
            if len(self._review_history) > 1:
                self._review_history.pop()
            tile = self._review_history[-1]
        self.select_tile(tile)

    def select_tile(self, tile_id: str) -> None:
        request = QgsFeatureRequest().setFilterExpression(
            QgsExpression.createFieldEqualityExpression("tile_id", tile_id))
        feature = next(self.tiles_layer.getFeatures(request), None)
        if feature is None:
            return
        self.tiles_layer.selectByIds([feature.id()])
        canvas = self.iface.mapCanvas()
        extent = self.tiles_layer.boundingBoxOfSelected()
        transform = QgsCoordinateTransform(self.tiles_layer.crs(),
                                           canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
        extent.scale(3.0)  # the tile with its neighbours around it
        canvas.setExtent(extent)
        canvas.refresh()

    def toggle_row(self, row: int) -> None:
        """Number keys: flip the label on that row of the list."""
        item = self.label_list.item(row)
        if item is not None and self.label_list.isEnabled():
            item.setCheckState(Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked)

    def update_counts(self) -> None:
        if self.store_path:
            c = status_counts(self.store_path)
            self.counts.setText(tr("{} predicted, {} corrected, {} verified").format(
                c["predicted"], c["corrected"], c["verified"]))

    def _label_picked(self, item: QListWidgetItem | None, _previous=None) -> None:
        """The label the analyst is looking at: its attention overlay on, the others off."""
        if item is not None and self.store_path:
            show_attention(Path(self.store_path).stem, item.data(Qt.UserRole))

    def checked_labels(self) -> list[str]:
        return [self.label_list.item(i).data(Qt.UserRole) for i in range(self.label_list.count())
                if self.label_list.item(i).checkState() == Qt.Checked]

    def _label_toggled(self, item: QListWidgetItem) -> None:
        """Add or remove this one label on every selected tile; each tile keeps its other
        labels (a partly checked row becomes checked: the label is added to all)."""
        if self._updating:
            return
        label = item.data(Qt.UserRole)
        add = item.checkState() != Qt.Unchecked
        self._correct(["--add" if add else "--remove", label],
                      (tr("Adding '{}'") if add else tr("Removing '{}'")).format(label))

    def mark_verified(self) -> None:
        self._correct(["--verify"], tr("Marking tiles verified"))

    def undo(self) -> None:
        """Undo the store's last action as a whole, whatever is selected now."""
        self._correct(["--undo"], tr("Undoing the last correction"), needs_selection=False)

    def _correct(self, what: list[str], description: str, needs_selection: bool = True) -> None:
        ids = self.selected_tile_ids() if needs_selection else []
        if (needs_selection and not ids) or not self.store_path:
            self._error(tr("Select tiles of a TileLabel store first."), "review")
            return
        job = ["correct", self.store_path, *[a for t in ids for a in ("--tile", t)], *what]
        # One correction at a time, so they reach the store in the order they were made.
        self._set_review_enabled(False)
        if self._run(description, job, lambda result: self._corrected(result),
                     exclusive=False, section="review") is None:
            self._set_review_enabled(True)

    def _set_review_enabled(self, enabled: bool) -> None:
        for widget in (self.label_list, self.verify_button, self.undo_button):
            widget.setEnabled(enabled)

    def _corrected(self, result: dict) -> None:
        selected = self.tiles_layer.selectedFeatureIds()
        self.tiles_layer.dataProvider().reloadData()  # the store is the truth: re-read it
        self.tiles_layer.selectByIds(selected)
        self.tiles_layer.triggerRepaint()
        self.review_status.setText(tr("{} tile(s) {}.").format(len(result["tiles"]),
                                                               result["action"]))
        self.show_selection()
        self.update_counts()

    # -- export and retrain ----------------------------------------------------------------
    def export(self, out: str | None = None, chips: str | None = None) -> None:
        if not self.store_path:
            self._error(tr("Annotate or open a TileLabel store first."), "train")
            return
        if out is None:
            out, _ = QFileDialog.getSaveFileName(self, tr("Export labelled tiles"),
                                                 str(Path(self.store_path).with_name("export.gpkg")),
                                                 "GeoPackage (*.gpkg)")
            if not out:
                return
            if self.chips_check.isChecked():
                chips = str(Path(out).with_suffix("")) + "_chips"
        if Path(out).resolve() == Path(self.store_path).resolve():
            self._error(tr("That file is the annotation store itself; choose another file "
                           "for the export."), "train")
            return
        # the save dialog has asked before replacing a file; the engine never replaces the store
        job = ["export", self.store_path, "--out", out, "--overwrite"] + (
            ["--chips", chips] if chips else [])
        self._run(tr("Exporting labelled tiles"), job, self._exported, section="train")

    def _exported(self, result: dict) -> None:
        self.train_status.setText(tr("Exported {} tiles to {}").format(result["tiles"],
                                                                       result["export"]))
        self.iface.messageBar().pushMessage("TileLabel", self.train_status.text(),
                                            level=Qgis.Success,
                                            duration=5)

    def retrain(self) -> None:
        if not self.store_path:
            self._error(tr("Annotate or open a TileLabel store first."), "train")
            return
        parent = self.model_combo.currentData() or latest_model(self.store_path)
        if not parent:
            self._error(tr("Choose a model directory to fine-tune (TileLabel settings)."),
                        "train")
            return
        reviewed = status_counts(self.store_path)
        reviewed = reviewed["corrected"] + reviewed["verified"]
        self._few_reviewed = ""
        if reviewed < FEW_REVIEWED:
            self._few_reviewed = tr("Only {} reviewed tiles to learn from: the new version will "
                                    "hardly change, and its validation figures rest on a "
                                    "handful of tiles. Review more tiles for a real gain."
                                    ).format(reviewed)
            self.warn(self._few_reviewed, "train")
        self._parent_model = parent
        stamp = time.strftime('%Y%m%d-%H%M%S')
        out = Path(self.store_path).parent / "models" / f"{Path(self.store_path).stem}-{stamp}"
        job = ["train", "--dataset", f"gpkg:{self.store_path}", "--init-from", parent,
               "--out", str(out), "--epochs", str(self.epochs_spin.value()),
               "--device", self.settings.device, "--batch-size", str(self.settings.batch_size),
               "--allow-no-val"]
        task = self._run(tr("Retraining"), job, self._retrained, section="train")
        if task is not None:
            task.needs_training = True  # a light engine refuses: offer the full install

    def offer_training_install(self) -> None:
        """The engine is the light one (no PyTorch): offer to add the training part."""
        answer = QMessageBox.question(
            self, tr("Retrain needs the training part"),
            tr("This TileLabel engine was installed without PyTorch (the light install: "
               "annotate, review, export). Retrain needs it: install the full engine now? "
               "(about 1 GB to download; the same environment is upgraded)"),
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer == QMessageBox.Yes:
            self.install_engine(part="full")

    def _retrained(self, result: dict) -> None:
        m = result.get("metrics") or {}
        figures = (tr("val mAP {:.3f}, OF1 {:.3f}, CF1 {:.3f}").format(
            m["mAP_macro"], m["OF1"], m["CF1"]) if m else tr("no validation tiles"))
        before = _val_metrics(getattr(self, "_parent_model", None))
        parent_figures = (tr("; its parent: val mAP {:.3f}, OF1 {:.3f}, CF1 {:.3f} (on the "
                             "parent's own validation data)").format(
            before["mAP_macro"], before["OF1"], before["CF1"]) if before else "")
        self.train_status.setText(tr("New model {} ({}), from {}{}").format(
            result["model_id"], figures, result.get("parent"), parent_figures)
            + (" " + self._few_reviewed if getattr(self, "_few_reviewed", "") else ""))
        self.refresh_models(select=result["model"])
