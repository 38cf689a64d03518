"""The plugin object QGIS loads: actions, menu, toolbar, panel and Processing provider."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .dock import TileLabelDock
from .i18n import tr
from .processing_provider import TileLabelProvider

MENU = "&TileLabel"


def icon_path() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "resources" / "icons" / "tilelabel.svg",
                      here.parent / "resources" / "icons" / "tilelabel.svg"):
        if candidate.is_file():
            return str(candidate)
    return ""


class TileLabelPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.dock: TileLabelDock | None = None
        self.provider: TileLabelProvider | None = None

    def initGui(self) -> None:  # noqa: N802
        icon = QIcon(icon_path())
        self.dock = TileLabelDock(self.iface, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        show = QAction(icon, tr("TileLabel panel"), self.iface.mainWindow())
        show.setCheckable(True)
        show.setChecked(True)
        show.toggled.connect(self.dock.setVisible)
        annotate = QAction(icon, tr("Annotate extent"), self.iface.mainWindow())
        annotate.triggered.connect(self._annotate)
        settings = QAction(tr("Settings..."), self.iface.mainWindow())
        settings.triggered.connect(self.open_settings)
        installer = QAction(tr("Install engine..."), self.iface.mainWindow())
        installer.triggered.connect(lambda: self.dock.install_engine())
        for action in (annotate, show, settings, installer):
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        self.iface.addToolBarIcon(annotate)
        self.provider = TileLabelProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        if SettingsDialog(self.dock.settings, self.iface.mainWindow()).exec_():
            self.dock.engine_python = None  # look again with the new settings
            self.dock.refresh_models()

    def _annotate(self) -> None:
        self.dock.show()
        self.dock.annotate()

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.dock.cancel()
            self.dock.disconnect_project()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
