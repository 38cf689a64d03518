"""The review loop of the panel: the labels of the selected tiles (tri-state over a
multi-selection), corrections and undo, the review queue and its keys. Mixed into the
dock (dock.py)."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsCoordinateTransform, QgsExpression, QgsFeatureRequest, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QListWidgetItem

from .i18n import tr
from .layers import show_attention
from .review_queue import review_order, status_counts
from .store_reader import label_columns, model_thresholds, split_labels, tile_name


class PanelReview:
    def selected_tile_ids(self) -> list[str]:
        if self.tiles_layer is None or not self._layer_alive():
            return []
        return [f["tile_id"] for f in self.tiles_layer.selectedFeatures()]

    def show_selection(self, *_args) -> None:
        """One row per label, most probable first (on the first selected tile), with the
        model's decision threshold: checked when every selected tile holds the label,
        partly checked when some do, unchecked when none. The scroll position is kept."""
        features = (self.tiles_layer.selectedFeatures()
                    if self.tiles_layer is not None and self._layer_alive() else [])
        scroll = self.label_list.verticalScrollBar().value()
        self._updating = True
        self.label_list.clear()
        if features and self.store_path:
            first = features[0]
            thresholds = model_thresholds(self.store_path)
            finals = [set(split_labels(f["final_labels"])) for f in features]
            rows = sorted(label_columns(self.store_path), key=lambda lc: -(first[lc[1]] or 0))
            for label, column in rows:
                holding = sum(label in final for final in finals)
                limit = thresholds.get(label)
                text = f"{label}  {first[column]:.2f}" + (f"  (threshold {limit:.2f})"
                                                          if limit is not None else "")
                item = QListWidgetItem(text)
                item.setData(Qt.UserRole, label)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if holding == len(finals) else
                                   Qt.PartiallyChecked if holding else Qt.Unchecked)
                self.label_list.addItem(item)
            self.tile_info.setText(tr("{} tile(s) selected; first: {} ({})").format(
                len(features), tile_name(first["tile_id"]), first["status"]))
        else:
            self.tile_info.setText(tr("Select tiles on the map or in the attribute table."))
        self.label_list.verticalScrollBar().setValue(scroll)
        self._updating = False

    def step_review(self, direction: int) -> None:
        """Select and zoom to the next (or previous) tile of the review queue."""
        if not self.store_path or self.tiles_layer is None or not self._layer_alive():
            self._error(tr("Annotate or open a TileLabel store first."), "review")
            return
        if direction > 0 or not self._review_history:
            queue = [t for t in review_order(self.store_path) if t not in self._review_history]
            if not queue:
                self.review_status.setText(tr("Every tile is reviewed."))
                return
            self._review_history.append(queue[0])
            tile = queue[0]
        else:
            if len(self._review_history) > 1:
                self._review_history.pop()
            tile = self._review_history[-1]
        self.select_tile(tile)

    def select_tile(self, tile_id: str) -> None:
        request = QgsFeatureRequest().setFilterExpression(
            QgsExpression.createFieldEqualityExpression("tile_id", tile_id))
        feature = next(self.tiles_layer.getFeatures(request), None)
        if feature is None:
            return
        self.tiles_layer.selectByIds([feature.id()])
        canvas = self.iface.mapCanvas()
        extent = self.tiles_layer.boundingBoxOfSelected()
        transform = QgsCoordinateTransform(self.tiles_layer.crs(),
                                           canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
        extent.scale(3.0)  # the tile with its neighbours around it
        canvas.setExtent(extent)
        canvas.refresh()

    def toggle_row(self, row: int) -> None:
        """Number keys: flip the label on that row of the list."""
        item = self.label_list.item(row)
        if item is not None and self.label_list.isEnabled():
            item.setCheckState(Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked)

    def update_counts(self) -> None:
        if self.store_path:
            c = status_counts(self.store_path)
            self.counts.setText(tr("{} predicted, {} corrected, {} verified").format(
                c["predicted"], c["corrected"], c["verified"]))

    def _label_picked(self, item: QListWidgetItem | None, _previous=None) -> None:
        """The label the analyst is looking at: its attention overlay on, the others off."""
        if item is not None and self.store_path:
            show_attention(Path(self.store_path).stem, item.data(Qt.UserRole))

    def checked_labels(self) -> list[str]:
        return [self.label_list.item(i).data(Qt.UserRole) for i in range(self.label_list.count())
                if self.label_list.item(i).checkState() == Qt.Checked]

    def _label_toggled(self, item: QListWidgetItem) -> None:
        """Add or remove this one label on every selected tile; each tile keeps its other
        labels (a partly checked row becomes checked: the label is added to all)."""
        if self._updating:
            return
        label = item.data(Qt.UserRole)
        add = item.checkState() != Qt.Unchecked
        self._correct(["--add" if add else "--remove", label],
                      (tr("Adding '{}'") if add else tr("Removing '{}'")).format(label))

    def mark_verified(self) -> None:
        self._correct(["--verify"], tr("Marking tiles verified"))

    def undo(self) -> None:
        """Undo the store's last action as a whole, whatever is selected now."""
        self._correct(["--undo"], tr("Undoing the last correction"), needs_selection=False)

    def _correct(self, what: list[str], description: str, needs_selection: bool = True) -> None:
        ids = self.selected_tile_ids() if needs_selection else []
        if (needs_selection and not ids) or not self.store_path:
            self._error(tr("Select tiles of a TileLabel store first."), "review")
            return
        job = ["correct", self.store_path, *[a for t in ids for a in ("--tile", t)], *what]
        # One correction at a time, so they reach the store in the order they were made.
        self._set_review_enabled(False)
        if self._run(description, job, lambda result: self._corrected(result),
                     exclusive=False, section="review") is None:
            self._set_review_enabled(True)

    def _set_review_enabled(self, enabled: bool) -> None:
        for widget in (self.label_list, self.verify_button, self.undo_button):
            widget.setEnabled(enabled)

    def _corrected(self, result: dict) -> None:
        selected = self.tiles_layer.selectedFeatureIds()
        self.tiles_layer.dataProvider().reloadData()  # the store is the truth: re-read it
        self.tiles_layer.selectByIds(selected)
        self.tiles_layer.triggerRepaint()
        self.review_status.setText(tr("{} tile(s) {}.").format(len(result["tiles"]),
                                                               result["action"]))
        self.show_selection()
        self.update_counts()
