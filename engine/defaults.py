"""Where the engine finds what it ships with, and the defaults the CLI parser shows.
Imports nothing heavy, so that the CLI parser (and store commands such as ``tilelabel
correct``) start without PyTorch.

The default model is package data (``engine/resources/models/default``): found through
importlib.resources, so an installed engine works from any directory.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = Path(str(files("engine.resources") / "models" / "default"))

# A tile that reaches past the raster's edge (or into its nodata) is padded with the
# model's mean. Below a quarter of real data more and more of what the model says there
# is made up by the padding: on UC Merced test tiles cut to their left share, precision
# against the whole image's labels is 0.894 whole, 0.892 at a half, 0.812 at a quarter,
# 0.683 at a tenth and 0.336 at a twentieth (benchmarks/partial_tiles.py,
# docs/benchmarks.md).
# Such slivers are skipped and counted with the nodata tiles.
MIN_VALID_FRACTION = 0.25
