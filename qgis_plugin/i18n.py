"""Translation of the plugin's texts (Qt's mechanism, context "TileLabel")."""
from __future__ import annotations


def tr(text: str) -> str:
    from qgis.PyQt.QtCore import QCoreApplication
    return QCoreApplication.translate("TileLabel", text)
