"""Export and retrain from the panel: the labelled tiles to a GeoPackage, a new model
version fine-tuned on the reviewed tiles, shown beside its parent's figures. Mixed into
the dock (dock.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QFileDialog, QMessageBox

from .i18n import tr
from .review_queue import status_counts
from .store_reader import latest_model

FEW_REVIEWED = 20  # below this many reviewed tiles, Retrain warns


def _val_metrics(model_dir: str | None) -> dict:
    try:
        doc = json.loads((Path(model_dir) / "model.json").read_text()) if model_dir else {}
    except (OSError, ValueError):
        return {}
    val = doc.get("metrics", {}).get("val", {})
    return val if {"mAP_macro", "OF1", "CF1"} <= set(val) else {}


class PanelTraining:
    def export(self, out: str | None = None, chips: str | None = None) -> None:
        if not self.store_path:
            self._error(tr("Annotate or open a TileLabel store first."), "train")
            return
        if out is None:
            out, _ = QFileDialog.getSaveFileName(self, tr("Export labelled tiles"),
                                                 str(Path(self.store_path).with_name("export.gpkg")),
                                                 "GeoPackage (*.gpkg)")
            if not out:
                return
            if self.chips_check.isChecked():
                chips = str(Path(out).with_suffix("")) + "_chips"
        if Path(out).resolve() == Path(self.store_path).resolve():
            self._error(tr("That file is the annotation store itself; choose another file "
                           "for the export."), "train")
            return
        # the save dialog has asked before replacing a file; the engine never replaces the store
        job = ["export", self.store_path, "--out", out, "--overwrite"] + (
            ["--chips", chips] if chips else [])
        self._run(tr("Exporting labelled tiles"), job, self._exported, section="train")

    def _exported(self, result: dict) -> None:
        self.train_status.setText(tr("Exported {} tiles to {}").format(result["tiles"],
                                                                       result["export"]))
        self.iface.messageBar().pushMessage("TileLabel", self.train_status.text(),
                                            level=Qgis.Success,
                                            duration=5)

    def retrain(self) -> None:
        if not self.store_path:
            self._error(tr("Annotate or open a TileLabel store first."), "train")
            return
        parent = self.model_combo.currentData() or latest_model(self.store_path)
        if not parent:
            self._error(tr("Choose a model directory to fine-tune (TileLabel settings)."),
                        "train")
            return
        reviewed = status_counts(self.store_path)
        reviewed = reviewed["corrected"] + reviewed["verified"]
        self._few_reviewed = ""
        if reviewed < FEW_REVIEWED:
            self._few_reviewed = tr("Only {} reviewed tiles: review more for a real gain."
                                    ).format(reviewed)
            self.warn(tr("Only {} reviewed tiles to learn from: the new version will hardly "
                         "change, and its validation figures rest on a handful of tiles. "
                         "Review more tiles for a real gain.").format(reviewed), "train")
        self._parent_model = parent
        stamp = time.strftime('%Y%m%d-%H%M%S')
        out = Path(self.store_path).parent / "models" / f"{Path(self.store_path).stem}-{stamp}"
        job = ["train", "--dataset", f"gpkg:{self.store_path}", "--init-from", parent,
               "--out", str(out), "--epochs", str(self.epochs_spin.value()),
               "--device", self.settings.device, "--batch-size", str(self.settings.batch_size),
               "--allow-no-val"]
        task = self._run(tr("Retraining"), job, self._retrained, section="train")
        if task is not None:
            task.needs_training = True  # a light engine refuses: offer the full install

    def offer_training_install(self) -> None:
        """The engine is the light one (no PyTorch): offer to add the training part."""
        answer = QMessageBox.question(
            self, tr("Retrain needs the training part"),
            tr("This TileLabel engine was installed without PyTorch (the light install: "
               "annotate, review, export). Retrain needs it: install the full engine now? "
               "(about 1 GB to download; the same environment is upgraded)"),
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer == QMessageBox.Yes:
            self.install_engine(part="full")

    def _retrained(self, result: dict) -> None:
        m = result.get("metrics") or {}
        figures = (tr("val mAP {:.3f}, OF1 {:.3f}, CF1 {:.3f} on {} tiles").format(
            m["mAP_macro"], m["OF1"], m["CF1"], m.get("n_images", "?")) if m
            else tr("no validation tiles"))
        before = _val_metrics(getattr(self, "_parent_model", None))
        parent_figures = (tr("\nIts parent: val mAP {:.3f}, OF1 {:.3f}, CF1 {:.3f} (on its own "
                             "validation data).").format(
            before["mAP_macro"], before["OF1"], before["CF1"]) if before else "")
        note = getattr(self, "_few_reviewed", "")
        self.train_status.setText(tr("New model: {}.{}").format(figures, parent_figures)
                                  + ("\n" + note if note else ""))
        self.train_status.setToolTip(tr("{} (from {})").format(result["model_id"],
                                                                result.get("parent")))
        self.refresh_models(select=result["model"])
