"""Where the engine finds what it ships with. Imports nothing heavy, so that the CLI
parser (and store commands such as ``tilelabel correct``) start without PyTorch."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "resources" / "models" / "default"
