"""The "Install engine" dialog: choose the part, watch the live log, cancel.

The installation runs as a QgsTask (engine_installer.install in a worker thread); its
log lines and progress reach the dialog through queued signals, so QGIS stays usable.
On success the environment's python is stored as the engine in the settings.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QHBoxLayout, QLabel, QPlainTextEdit,
                                 QProgressBar, QPushButton, QVBoxLayout)

from .engine_installer import (InstallError, InstallPlan, base_python, bundled_wheel, find_uv,
                               install, nvidia_gpu)
from .i18n import tr
from .settings import PluginSettings


def default_env_dir() -> Path:
    """``<QGIS profile>/tilelabel/engine-env``."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "tilelabel" / "engine-env"


class InstallSignals(QObject):
    line = pyqtSignal(str)
    done = pyqtSignal(str, str)  # (engine python, error): one of them is empty


class InstallTask(QgsTask):
    def __init__(self, plan: InstallPlan) -> None:
        super().__init__(tr("Installing the TileLabel engine"), QgsTask.CanCancel)
        self.plan, self.signals = plan, InstallSignals()
        self.python, self.error = "", ""

    def run(self) -> bool:  # worker thread
        try:
            self.python = install(self.plan, self.signals.line.emit, self.setProgress,
                                  self.isCanceled)
        except InstallError as exc:
            self.error = str(exc)
        except OSError as exc:  # the base Python vanished, a folder cannot be made...
            self.error = f"{exc}"
        return not self.error

    def finished(self, ok: bool) -> None:  # main thread
        if not ok and not self.error:
            self.error = "cancelled"
        self.signals.done.emit(self.python, self.error)


class InstallDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent=None, env: Path | None = None,
                 part: str = "light") -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Install the TileLabel engine"))
        self.settings, self.env = settings, env or default_env_dir()
        self.task: InstallTask | None = None
        self.engine_python = ""
        layout = QVBoxLayout(self)
        self.base, self.wheel, self.cuda = base_python(), bundled_wheel(), nvidia_gpu()
        self.uv = find_uv()
        self.summary = QLabel(self._summary())
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        self.part = QComboBox()
        self.part.addItem(tr("Light: annotate, review, export (about 100 MB)"), "light")
        self.part.addItem(tr("Full: also Retrain (PyTorch, about 1 GB)"), "full")
        self.part.setCurrentIndex(max(0, self.part.findData(part)))
        row.addWidget(self.part)
        self.start = QPushButton(tr("Install"))
        self.start.clicked.connect(self.begin)
        self.start.setEnabled(bool(self.base and self.wheel))
        row.addWidget(self.start)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.stop)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMinimumSize(640, 260)
        layout.addWidget(self.log)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(2 * self.status.fontMetrics().height())
        layout.addWidget(self.status)

    def _summary(self) -> str:
        if not self.wheel:
            return tr("This copy of the plugin carries no engine wheel (it runs from the "
                      "source tree): use the repository's 'make setup' instead.")
        if not self.base:
            return tr("No Python found to build the engine's environment: install Python 3 "
                      "(python.org) or set TILELABEL_BASE_PYTHON, then open this again.")
        gpu = (tr("An NVIDIA GPU was found: the full install takes PyTorch's CUDA build")
               if self.cuda else tr("No NVIDIA GPU found: the full install takes PyTorch's "
                                    "CPU build"))
        return (tr("Creates a Python environment in ") + f"{self.env} " + tr("with ")
                + f"{Path(self.base).name} ({self.base}), " + tr("installs ")
                + f"{self.wheel.name} " + tr("and its dependencies from the package index ")
                + (tr("with uv") if self.uv else tr("with pip")) + tr(", then checks it. "
                "Running it again repairs or upgrades. ") + gpu + ".")

    def begin(self) -> None:
        plan = InstallPlan(self.base, self.env, self.wheel, self.part.currentData(), self.cuda,
                           uv=self.uv)
        self.task = InstallTask(plan)
        self.task.signals.line.connect(self._log_line)
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self.task.signals.done.connect(self._done)
        self.start.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(tr("Installing..."))
        QgsApplication.taskManager().addTask(self.task)

    def _log_line(self, line: str) -> None:
        self.log.appendPlainText(line)
        bar = self.log.verticalScrollBar()
        bar.setValue(bar.maximum())  # follow the log as pip writes it

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _done(self, python: str, error: str) -> None:
        self.cancel_button.setEnabled(False)
        self.start.setEnabled(True)
        if error:
            self.status.setText(tr("Not installed: ") + error)
            return
        self.engine_python = python
        self.settings.engine_python = python
        self.settings.save()
        self.progress.setValue(100)
        self.status.setText(tr("Installed and checked; the engine is ") + python)
