"""Map layers for an annotation: the tiles layer (styled by label) and attention layers.

Only called on the main thread (from a task's ``finished``), as QGIS requires.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsCategorizedSymbolRenderer, QgsColorRampShader, QgsExpression, QgsFillSymbol,
                       QgsLayerTreeGroup, QgsPalLayerSettings, QgsProject, QgsRasterLayer,
                       QgsRasterShader, QgsRendererCategory, QgsSimpleLineSymbolLayer, QgsSingleBandPseudoColorRenderer,
                       QgsTextBufferSettings, QgsTextFormat, QgsVectorLayer,
                       QgsVectorLayerSimpleLabeling, QgsBilinearRasterResampler)
from qgis.PyQt.QtGui import QColor

from .store_reader import label_columns

_literal = QgsExpression.quotedString
_column = QgsExpression.quotedColumnRef

GROUP_PREFIX = "TileLabel: "


# A qualitative palette of distinct colours (Kelly's 22 minus white and black), so that
# neighbouring categories never look alike; "none" is grey.
PALETTE = ["#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#848482",
           "#008856", "#E68FAC", "#0067A5", "#F99379", "#604E97", "#F6A600", "#B3446C",
           "#DCD300", "#882D17", "#8DB600", "#654522", "#E25822", "#2B3D26"]
NONE_COLOUR = "#9E9E9E"
FILL_OPACITY = 0.15          # tiles are outlines with a light fill: the imagery stays visible
LABELS_MIN_SCALE = 25_000    # tile labels hidden when zoomed out beyond 1:25,000
SELECTED_OUTLINE_MM = 1.2    # the outline a selected tile is drawn with


def display_expression(columns: list[tuple[str, str]]) -> str:
    """The label a tile is drawn and named by: its top predicted label while predicted;
    once an analyst corrected or verified it, the most probable of its final labels
    (not the first in the vocabulary), or 'none' when it has none."""
    present = ", ".join(f"if(array_contains(@f, {_literal(label)}), coalesce({_column(column)}, 0), -1)"
                        for label, column in columns)
    names = ", ".join(_literal(label) for label, _ in columns)
    reviewed = ("with_variable('f', string_to_array(coalesce(\"final_labels\", ''), '; '), "
                f"with_variable('p', array({present}), if(array_max(@p) < 0, 'none', "
                f"array_get(array({names}), array_find(@p, array_max(@p))))))")
    return f"if(\"status\" = 'predicted', \"top_label\", {reviewed})"


def short_label(display: str) -> str:
    """The tile's map label: its displayed label, '+N' other predicted labels, a tick
    once reviewed."""
    return ("coalesce(" + display + ", '') || if(\"n_labels\" > 1 AND "
            "\"status\" = 'predicted', ' +' || to_string(\"n_labels\" - 1), '') || "
            "if(\"status\" != 'predicted', ' \u2713', '')")


def label_colour(i: int, n: int) -> QColor:
    return QColor(PALETTE[i % len(PALETTE)])


def style_tiles(layer: QgsVectorLayer, columns: list[tuple[str, str]]) -> None:
    """Outlines coloured by the displayed label over a light fill; reviewed tiles thick,
    edge tiles dashed; a selected tile drawn as a thick outline in QGIS's selection colour
    with its imagery left visible (QGIS 3.22 would fill it opaque); short haloed labels
    hidden at small scales. ``columns``: the store's (label, p_<label> column) pairs."""
    labels = [label for label, _ in columns]
    display = display_expression(columns)
    categories = [QgsRendererCategory(label, _tile_symbol(
        QColor(NONE_COLOUR) if label == "none" else label_colour(i, len(labels))), label)
        for i, label in enumerate(labels + ["none"])]
    layer.setRenderer(QgsCategorizedSymbolRenderer(display, categories))
    layer.setLabeling(QgsVectorLayerSimpleLabeling(_tile_labels(short_label(display))))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def _tile_symbol(colour: QColor) -> QgsFillSymbol:
    fill = QColor(colour)
    fill.setAlphaF(FILL_OPACITY)
    symbol = QgsFillSymbol.createSimple({
        "color": fill.name(QColor.HexArgb), "outline_color": colour.name(),
        "outline_width": "0.4"})
    tile = symbol.symbolLayer(0)
    tile.setDataDefinedProperty(tile.PropertyStrokeWidth,
                                _property("if(\"status\" = 'predicted', 0.4, 1.2)"))
    tile.setDataDefinedProperty(tile.PropertyStrokeStyle,
                                _property("if(\"edge\" = 1, 'dash', 'solid')"))
    tile.setDataDefinedProperty(tile.PropertyLayerEnabled, _property("not is_selected()"))
    selected = QgsSimpleLineSymbolLayer(colour, SELECTED_OUTLINE_MM)  # drawn in selection colour
    selected.setDataDefinedProperty(selected.PropertyLayerEnabled, _property("is_selected()"))
    symbol.appendSymbolLayer(selected)
    return symbol


def _tile_labels(expression: str) -> QgsPalLayerSettings:
    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    settings.placement = QgsPalLayerSettings.OverPoint  # at the tile's centre, not beside it
    text = QgsTextFormat()
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    text.setSize(8)
    settings.setFormat(text)
    settings.scaleVisibility = True
    settings.minimumScale = LABELS_MIN_SCALE  # QGIS: the most zoomed-out scale shown
    return settings


def _property(expression: str):
    from qgis.core import QgsProperty
    return QgsProperty.fromExpression(expression)


# The overlay stays see-through: nothing below CLEAR_BELOW, at most MAX_ALPHA (of 255) at
# full attention, so the imagery under a bright label (trees over a park) stays readable.
# The paper models' maps (the default MS-CMA's) peak at 0.5-0.9 on present labels' objects
# and stay under 0.2 elsewhere (engine/models/attention.py: one fixed [0, 1] scale).
CLEAR_BELOW, MID, MID_ALPHA, MAX_ALPHA = 0.2, 0.5, 70, 130


def style_attention(layer: QgsRasterLayer, band: int, label: str, colour: QColor) -> None:
    """One hue per label, from transparent (low attention) to half-opaque (high), bilinear."""
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    clear, mid, strong = QColor(colour), QColor(colour), QColor(colour)
    clear.setAlpha(0)
    mid.setAlpha(MID_ALPHA)
    strong.setAlpha(MAX_ALPHA)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0.0, clear, f"attention for {label}: low"),
        QgsColorRampShader.ColorRampItem(CLEAR_BELOW, clear, ""),
        QgsColorRampShader.ColorRampItem(MID, mid, ""),
        QgsColorRampShader.ColorRampItem(1.0, strong, "high")])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    layer.setRenderer(renderer)
    layer.resampleFilter().setZoomedInResampler(QgsBilinearRasterResampler())
    layer.resampleFilter().setZoomedOutResampler(QgsBilinearRasterResampler())
    layer.triggerRepaint()


def tiles_layer_of(store: str, project: QgsProject | None = None) -> QgsVectorLayer | None:
    """The project's layer showing ``store``'s tiles, if there is one."""
    target = str(Path(store).resolve())
    for layer in (project or QgsProject.instance()).mapLayers().values():
        if isinstance(layer, QgsVectorLayer) and layer.providerType() == "ogr":
            path = layer.source().split("|")[0]
            if "layername=tiles" in layer.source() and Path(path).exists() \
                    and str(Path(path).resolve()) == target:
                return layer
    return None


def add_annotation_layers(store: str, attention: str | None, name: str,
                          project: QgsProject | None = None) -> tuple[QgsVectorLayer, list[QgsRasterLayer]]:
    """Show a store: its tiles layer and this run's attention layers under a
    'TileLabel: name' group. A store already shown is reloaded and restyled, and its
    attention sub-group replaced by this run's, so re-annotating never stacks layers."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_PREFIX + name) or root.insertGroup(0, GROUP_PREFIX + name)
    labels = [label for label, _ in label_columns(store)]
    tiles = tiles_layer_of(store, project)
    if tiles is None:
        tiles = QgsVectorLayer(f"{store}|layername=tiles", f"{name} tiles", "ogr")
        if not tiles.isValid():
            raise RuntimeError(f"QGIS cannot open the tiles layer of {store}")
        project.addMapLayer(tiles, False)
        group.insertLayer(0, tiles)
    else:
        tiles.dataProvider().reloadData()
        tiles.updateExtents()
    style_tiles(tiles, label_columns(store))
    rasters = []
    for old in attention_groups(group):
        project.removeMapLayers([l.layerId() for l in old.findLayers()])
        group.removeChildNode(old)
    if attention and Path(attention).is_file():
        sub = group.addGroup(f"attention ({Path(attention).stem})")
        for band, label in enumerate(labels, start=1):
            layer = QgsRasterLayer(attention, f"attention: {label}")
            style_attention(layer, band, label, label_colour(band - 1, len(labels)))
            project.addMapLayer(layer, False)
            node = sub.addLayer(layer)
            node.setItemVisibilityChecked(False)  # shown when the analyst picks its label
            rasters.append(layer)
        sub.setExpanded(False)
    return tiles, rasters


def attention_groups(group: QgsLayerTreeGroup) -> list[QgsLayerTreeGroup]:
    """The 'attention (<run>)' sub-groups of a store's group."""
    return [g for g in group.children() if isinstance(g, QgsLayerTreeGroup)
            and g.name().startswith("attention")]


def show_attention(name: str, label: str | None, project: QgsProject | None = None) -> bool:
    """Switch on the attention overlay of ``label`` in the 'TileLabel: name' group and
    every other overlay off (``None``: all off). False when the group has no overlay
    for that label."""
    group = find_group(name, project)
    shown = False
    for sub in attention_groups(group) if group else []:
        for node in sub.findLayers():
            match = label is not None and node.layer().name() == f"attention: {label}"
            node.setItemVisibilityChecked(match)
            shown = shown or match
    return shown


def find_group(name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup | None:
    return (project or QgsProject.instance()).layerTreeRoot().findGroup(GROUP_PREFIX + name)
