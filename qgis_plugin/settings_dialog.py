"""The TileLabel settings dialog: engine interpreter, device, model, overlap, batch size,
test-time augmentation."""
from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                                 QFormLayout, QLabel, QPushButton, QSpinBox)

from .settings import INSTALL_HINT, PluginSettings, find_engine_python


TTA_CHOICES = (("none", "None (fastest)"), ("flips", "4 flips (4x time)"),
               ("dihedral", "8 flips and turns (8x time)"))


def tr(text: str) -> str:
    from qgis.PyQt.QtCore import QCoreApplication
    return QCoreApplication.translate("TileLabel", text)


class SettingsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("TileLabel settings"))
        self.settings = settings
        form = QFormLayout(self)
        self.python = QgsFileWidget()
        self.python.setFilePath(settings.engine_python)
        self.detect = QPushButton(tr("Find automatically"))
        self.detect.clicked.connect(self.find_engine)
        self.found = QLabel("")
        self.found.setWordWrap(True)
        form.addRow(tr("Engine Python"), self.python)
        form.addRow(self.detect, self.found)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setCurrentText(settings.device)
        form.addRow(tr("Device"), self.device)
        self.model = QgsFileWidget()
        self.model.setStorageMode(QgsFileWidget.GetDirectory)
        self.model.setFilePath(settings.model_dir)
        form.addRow(tr("Default model directory"), self.model)
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.89)
        self.overlap.setSingleStep(0.05)
        self.overlap.setValue(settings.overlap)
        form.addRow(tr("Tile overlap"), self.overlap)
        self.batch = QSpinBox()
        self.batch.setRange(1, 512)
        self.batch.setValue(settings.batch_size)
        form.addRow(tr("Batch size"), self.batch)
        self.tta = QComboBox()
        for mode, text in TTA_CHOICES:
            self.tta.addItem(tr(text), mode)
        self.tta.setCurrentIndex(max(0, self.tta.findData(settings.tta)))
        self.tta.setToolTip(tr("Predict each tile in several flipped and turned views and "
                               "average them: slightly more accurate labels and maps, at 4 "
                               "or 8 times the time per tile"))
        form.addRow(tr("Test-time augmentation"), self.tta)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def find_engine(self) -> None:
        python = find_engine_python(self.python.filePath())
        if python:
            self.python.setFilePath(python)
            self.found.setText(tr("Found: ") + python)
        else:
            self.found.setText(tr("Not found: ") + INSTALL_HINT)

    def accept(self) -> None:
        s = self.settings
        s.engine_python, s.device = self.python.filePath(), self.device.currentText()
        s.model_dir, s.overlap = self.model.filePath(), self.overlap.value()
        s.batch_size, s.tta = self.batch.value(), self.tta.currentData()
        s.save()
        super().accept()
