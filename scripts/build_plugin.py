"""Build the installable QGIS plugin zip: one top-level folder ``tilelabel/`` holding the
plugin code (qgis_plugin/), metadata.txt and the icons.

Usage: python scripts/build_plugin.py [OUT.zip]   (default: out/tilelabel.zip)
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "tilelabel"


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted((ROOT / "qgis_plugin").rglob("*.py")):
            z.write(path, f"{FOLDER}/{path.relative_to(ROOT / 'qgis_plugin')}")
        z.write(ROOT / "metadata.txt", f"{FOLDER}/metadata.txt")
        for path in sorted((ROOT / "resources" / "icons").iterdir()):
            z.write(path, f"{FOLDER}/resources/icons/{path.name}")
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "tilelabel.zip"))
