"""The annotation store remembered in the QGIS project, so that reopening a saved project
(or restarting QGIS) reconnects the panel to its store and tiles layer."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject, QgsVectorLayer

from .layers import add_annotation_layers, tiles_layer_of

SCOPE, KEY = "TileLabel", "store"


def remember_store(store: str, project: QgsProject | None = None) -> None:
    (project or QgsProject.instance()).writeEntry(SCOPE, KEY, str(Path(store).resolve()))


def remembered_store(project: QgsProject | None = None) -> str | None:
    value, found = (project or QgsProject.instance()).readEntry(SCOPE, KEY, "")
    return value if found and value and Path(value).is_file() else None


def open_store_layer(store: str, project: QgsProject | None = None) -> QgsVectorLayer:
    """The project's tiles layer of ``store``; added (with its group) when missing."""
    layer = tiles_layer_of(store, project)
    if layer is None:
        layer, _ = add_annotation_layers(store, None, Path(store).stem, project)
    return layer
