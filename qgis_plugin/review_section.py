"""The panel's review section: the labels of the selected tiles, the review queue's
buttons and the status counts. Widgets only; the dock wires them to the store."""
from __future__ import annotations

from qgis.PyQt.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QListWidget, QPushButton,
                                 QVBoxLayout)

from .i18n import tr


class ReviewSection(QGroupBox):
    def __init__(self) -> None:
        super().__init__(tr("Labels of the selected tiles"))
        layout = QVBoxLayout(self)
        self.tile_info = QLabel(tr("Select tiles on the map or in the attribute table."))
        self.tile_info.setWordWrap(True)
        self.label_list = QListWidget()
        row = QHBoxLayout()
        self.verify_button = QPushButton(tr("Mark verified"))
        self.undo_button = QPushButton(tr("Undo last correction"))
        self.open_store_button = QPushButton(tr("Open store..."))
        row.addWidget(self.open_store_button)
        row.addWidget(self.verify_button)
        row.addWidget(self.undo_button)
        nav = QHBoxLayout()
        self.previous_button = QPushButton(tr("< Previous"))
        self.previous_button.setToolTip(tr("Previous tile to review (P)"))
        self.next_button = QPushButton(tr("Next to review >"))
        self.next_button.setToolTip(tr("Next tile to review, least confident first (N); "
                                       "V verifies, U undoes, 1-9 toggle the labels"))
        nav.addWidget(self.previous_button)
        nav.addWidget(self.next_button)
        self.counts = QLabel("")
        layout.addWidget(self.counts)
        layout.addLayout(nav)
        layout.addWidget(self.tile_info)
        layout.addWidget(self.label_list)
        layout.addLayout(row)
        self.review_status = QLabel("")  # what the last correction did, or why it could not
        self.review_status.setWordWrap(True)
        layout.addWidget(self.review_status)
