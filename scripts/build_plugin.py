"""Build the installable QGIS plugin zip: one top-level folder ``tilelabel/`` holding the
plugin code (qgis_plugin/), metadata.txt, the icons, the LICENSE, and the engine's wheel
under ``engine/`` (with the default model inside), so that installing the engine needs
only the package index for its dependencies, not the repository.

Usage: python scripts/build_plugin.py [OUT.zip]   (default: out/tilelabel.zip)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "tilelabel"


def engine_wheel(folder: Path) -> Path:
    """Build the engine's wheel (pip; no network: the build uses this environment)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(ROOT), "-w", str(folder)], check=True,
                   capture_output=True)
    return next(folder.glob("tilelabel-*.whl"))


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        wheel = engine_wheel(Path(tmp))
        z.write(wheel, f"{FOLDER}/engine/{wheel.name}")
        z.write(ROOT / "LICENSE", f"{FOLDER}/LICENSE")
        for path in sorted((ROOT / "qgis_plugin").rglob("*.py")):
            z.write(path, f"{FOLDER}/{path.relative_to(ROOT / 'qgis_plugin')}")
        z.write(ROOT / "metadata.txt", f"{FOLDER}/metadata.txt")
        for path in sorted((ROOT / "resources" / "icons").iterdir()):
            z.write(path, f"{FOLDER}/resources/icons/{path.name}")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "tilelabel.zip"))
