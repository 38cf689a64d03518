"""docs/screenshot_installer.png: the Install engine dialog of the built zip, running.

Builds the plugin zip, extracts it as QGIS would, opens the installer dialog on a
temporary environment folder, starts the light install and saves the dialog once the
log shows pip at work, then again when it has finished (docs/screenshot_installer_done.png).

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/installer_screenshot.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qgis.core import QgsApplication  # noqa: E402

from scripts.build_plugin import build  # noqa: E402
from scripts.panel_session import wait_for  # noqa: E402


def main() -> None:
    app = QgsApplication([], True)
    app.initQgis()
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(build(Path(tmp) / "tilelabel.zip")) as z:
            z.extractall(Path(tmp) / "plugins")
        sys.path.insert(0, str(Path(tmp) / "plugins"))
        from tilelabel.install_dialog import InstallDialog
        from tilelabel.settings import PluginSettings

        saved = PluginSettings.load()
        dialog = InstallDialog(PluginSettings(), env=Path(tmp) / "engine-env")
        dialog.resize(760, 460)
        dialog.show()
        dialog.begin()
        wait_for(lambda: "Collecting" in dialog.log.toPlainText()
                 or dialog.status.text().startswith(("Installed", "Not")), 300)
        dialog.grab().save(str(ROOT / "docs" / "screenshot_installer.png"))
        wait_for(lambda: dialog.status.text().startswith(("Installed", "Not")), 900)
        dialog.grab().save(str(ROOT / "docs" / "screenshot_installer_done.png"))
        print(dialog.status.text())
        saved.save()
    app.exitQgis()


if __name__ == "__main__":
    main()
