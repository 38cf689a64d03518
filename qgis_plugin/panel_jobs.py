"""Running the panel's engine jobs: one at a time per store for annotate, export and
retrain, each reporting in the section it was started from (progress, stages, warnings),
errors shown until a later job succeeds. Mixed into the dock (dock.py)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsMessageBarItem
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QLabel, QProgressBar

from .engine_job import EngineJob, JobOutcome
from .i18n import tr
from .project_link import open_store_layer

LIGHT_ENGINE_REFUSAL = "needs PyTorch"  # what a light engine's train says (engine/cli.py)


class PanelJobs:
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
