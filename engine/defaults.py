"""Where the engine finds what it ships with. Imports nothing heavy, so that the CLI
parser (and store commands such as ``tilelabel correct``) start without PyTorch.

The default model is package data (``engine/resources/models/default``): found through
importlib.resources, so an installed engine works from any directory.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = Path(str(files("engine.resources") / "models" / "default"))
