"""Map layers for an annotation: the tiles layer (styled by label) and attention layers.

Only called on the main thread (from a task's ``finished``), as QGIS requires.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

from qgis.core import (QgsCategorizedSymbolRenderer, QgsColorRampShader, QgsFillSymbol,
                       QgsLayerTreeGroup, QgsPalLayerSettings, QgsProject, QgsRasterLayer,
                       QgsRasterShader, QgsRendererCategory, QgsSingleBandPseudoColorRenderer,
                       QgsVectorLayer, QgsVectorLayerSimpleLabeling)
from qgis.PyQt.QtGui import QColor

from .store_reader import read_store, store_labels

# The label shown for a tile: its predicted top label, or the first of its final labels
# once an analyst corrected or verified it.
DISPLAY_EXPRESSION = ("if(\"status\" = 'predicted', \"top_label\", "
                      "coalesce(regexp_substr(\"final_labels\", '^([^;]+)'), 'none'))")
ATTENTION_SHOWN = 3  # attention layers visible at first: the most frequent top labels
GROUP_PREFIX = "TileLabel: "


def label_colour(i: int, n: int) -> QColor:
    r, g, b = colorsys.hsv_to_rgb(i / max(n, 1), 0.65, 0.9)
    return QColor(int(r * 255), int(g * 255), int(b * 255))


def style_tiles(layer: QgsVectorLayer, labels: list[str]) -> None:
    """Categorised by displayed label, a thicker outline for reviewed tiles, labelled."""
    categories = []
    for i, label in enumerate(labels + ["none"]):
        symbol = QgsFillSymbol.createSimple({
            "color": label_colour(i, len(labels)).name(QColor.HexArgb),
            "outline_color": "#303030", "outline_width": "0.3"})
        symbol.setOpacity(0.45)  # the imagery stays readable under the tiles
        symbol.symbolLayer(0).setDataDefinedProperty(
            symbol.symbolLayer(0).PropertyStrokeWidth,
            _property("if(\"status\" = 'predicted', 0.3, 1.0)"))
        categories.append(QgsRendererCategory(label, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer(DISPLAY_EXPRESSION, categories))
    settings = QgsPalLayerSettings()
    settings.fieldName = "coalesce(\"final_labels\", '') || '\\n' || \"status\""
    settings.isExpression = True
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def _property(expression: str):
    from qgis.core import QgsProperty
    return QgsProperty.fromExpression(expression)


def style_attention(layer: QgsRasterLayer, band: int) -> None:
    """Singleband pseudocolour, transparent below 0.5, yellow to red above."""
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0.0, QColor(255, 255, 0, 0), "0"),
        QgsColorRampShader.ColorRampItem(0.5, QColor(255, 255, 0, 0), "0.5"),
        QgsColorRampShader.ColorRampItem(0.75, QColor(255, 160, 0, 150), "0.75"),
        QgsColorRampShader.ColorRampItem(1.0, QColor(220, 0, 0, 210), "1")])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader))
    layer.triggerRepaint()


def add_annotation_layers(store: str, attention: str | None, name: str,
                          project: QgsProject | None = None) -> tuple[QgsVectorLayer, list[QgsRasterLayer]]:
    """Add the tiles layer and an attention sub-group under a 'TileLabel: name' group."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_PREFIX + name) or root.insertGroup(0, GROUP_PREFIX + name)
    labels = store_labels(store)
    tiles = QgsVectorLayer(f"{store}|layername=tiles", f"{name} tiles", "ogr")
    if not tiles.isValid():
        raise RuntimeError(f"QGIS cannot open the tiles layer of {store}")
    style_tiles(tiles, labels)
    project.addMapLayer(tiles, False)
    group.insertLayer(0, tiles)
    rasters = []
    if attention and Path(attention).is_file():
        sub = group.addGroup("attention")
        top = _frequent_top_labels(store, ATTENTION_SHOWN)
        for band, label in enumerate(labels, start=1):
            layer = QgsRasterLayer(attention, f"attention: {label}")
            style_attention(layer, band)
            project.addMapLayer(layer, False)
            node = sub.addLayer(layer)
            node.setItemVisibilityChecked(label in top)
            rasters.append(layer)
        sub.setExpanded(False)
    return tiles, rasters


def _frequent_top_labels(store: str, n: int) -> list[str]:
    with read_store(store) as conn:
        rows = conn.execute("SELECT top_label, COUNT(*) c FROM tiles GROUP BY top_label "
                            "ORDER BY c DESC LIMIT ?", (n,)).fetchall()
    return [r[0] for r in rows]


def find_group(name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup | None:
    return (project or QgsProject.instance()).layerTreeRoot().findGroup(GROUP_PREFIX + name)
