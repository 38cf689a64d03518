"""Plugin settings (QgsSettings under ``tilelabel/``) and finding the engine's Python.

QGIS's own Python usually has no torch, so the engine runs in its own interpreter: the
one set in the settings, else the project's ``.venv`` next to this plugin's source, else
the interpreter behind a ``tilelabel`` command on PATH, else QGIS's own Python when it
can import the engine.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from qgis.core import QgsSettings

PREFIX = "tilelabel/"
_WHEELS = sorted((Path(__file__).resolve().parent / "engine").glob("tilelabel-*.whl"))
INSTALL_HINT = (("install the TileLabel engine that comes with this plugin into a Python "
                 f"environment: python3 -m venv ENV && ENV/bin/pip install '{_WHEELS[-1]}' "
                 "(this also installs PyTorch), then set ENV's python in TileLabel > Settings")
                if _WHEELS else
                ("install the TileLabel engine (git clone the project, then run 'make setup' "
                 "in it) and set its Python in TileLabel > Settings, e.g. "
                 "/path/to/tilelabel/.venv/bin/python"))


@dataclass
class PluginSettings:
    engine_python: str = ""
    device: str = "auto"
    model_dir: str = ""
    overlap: float = 0.0
    batch_size: int = 16
    tta: str = "none"  # test-time augmentation: none | flips | dihedral (engine/infer/tta.py)

    @classmethod
    def load(cls) -> "PluginSettings":
        s, out = QgsSettings(), cls()
        for f in fields(cls):
            value = s.value(PREFIX + f.name, getattr(out, f.name))
            setattr(out, f.name, type(getattr(out, f.name))(value))
        return out

    def save(self) -> None:
        s = QgsSettings()
        for f in fields(self):
            s.setValue(PREFIX + f.name, getattr(self, f.name))


def _can_import_engine(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import engine.cli"], capture_output=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _script_interpreter(script: str) -> str | None:
    try:
        first = Path(script).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    return first[2:].strip() if first.startswith("#!") else None


def engine_candidates(configured: str = "") -> list[str]:
    here = Path(__file__).resolve().parent
    candidates = [configured] if configured else []
    for root in (here.parent, here.parent.parent):
        candidates.append(str(root / ".venv" / "bin" / "python"))
    script = shutil.which("tilelabel")
    if script and _script_interpreter(script):
        candidates.append(_script_interpreter(script))
    candidates.append(sys.executable)
    return [c for c in dict.fromkeys(candidates) if c and Path(c).exists()]


def find_engine_python(configured: str = "") -> str | None:
    """The first candidate interpreter that can import the engine, or None."""
    return next((c for c in engine_candidates(configured) if _can_import_engine(c)), None)


def default_model_dir(settings: PluginSettings) -> str:
    if settings.model_dir:
        return settings.model_dir
    repo_default = (Path(__file__).resolve().parent.parent / "engine" / "resources" / "models"
                    / "default")
    return str(repo_default) if repo_default.is_dir() else ""
