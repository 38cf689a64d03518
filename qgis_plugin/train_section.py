"""The panel's Export and retrain section. Widgets only; the dock runs the jobs."""
from __future__ import annotations

from qgis.PyQt.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                                 QProgressBar, QPushButton, QSpinBox)

from .i18n import tr


class TrainSection(QGroupBox):
    def __init__(self) -> None:
        super().__init__(tr("Export and retrain"))
        form = QFormLayout(self)
        self.export_button = QPushButton(tr("Export labelled tiles..."))
        self.chips_check = QCheckBox(tr("with image chips"))
        row = QHBoxLayout()
        row.addWidget(self.export_button, 1)
        row.addWidget(self.chips_check)
        form.addRow(row)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 200)
        self.epochs_spin.setValue(5)
        form.addRow(tr("Epochs"), self.epochs_spin)
        self.retrain_button = QPushButton(tr("Retrain on reviewed tiles"))
        form.addRow(self.retrain_button)
        self.train_progress = QProgressBar()  # export and retrain report here
        self.train_progress.setRange(0, 100)
        form.addRow(self.train_progress)
        self.train_status = QLabel("")
        self.train_status.setWordWrap(True)
        form.addRow(self.train_status)
