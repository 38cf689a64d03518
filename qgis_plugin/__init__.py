"""TileLabel QGIS plugin: multi-label annotation of imagery tiles, driven by the engine.

The plugin never imports torch: every engine job runs as a child process (DESIGN.md).
"""


def classFactory(iface):  # noqa: N802 - QGIS's required entry point
    from .plugin import TileLabelPlugin

    return TileLabelPlugin(iface)
