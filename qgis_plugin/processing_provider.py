"""Processing provider: Annotate raster, Export labelled tiles, Retrain model.

Each algorithm runs one engine job synchronously in the Processing thread (child
process, JSON progress forwarded to the feedback), so batch runs, the graphical
modeller and ``qgis_process`` work.
"""
from __future__ import annotations

import os

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingParameterBoolean,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterCrs, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingProvider)
from qgis.PyQt.QtGui import QIcon

from .engine_job import run_engine
from .settings import INSTALL_HINT, PluginSettings, default_model_dir, find_engine_python

DEVICES = ["auto", "cpu", "cuda"]
TTA_MODES = ["none", "flips", "dihedral"]  # engine/infer/tta.py


def _engine() -> str:
    python = find_engine_python(PluginSettings.load().engine_python)
    if python is None:
        raise QgsProcessingException("No TileLabel engine found: " + INSTALL_HINT)
    return python


def _run(job: list[str], feedback: QgsProcessingFeedback) -> dict:
    def on_event(event: dict) -> None:
        if event.get("event") == "progress" and event.get("total"):
            feedback.setProgress(100.0 * event["done"] / event["total"])
        elif event.get("event") == "log":
            feedback.pushInfo(event.get("message", ""))

    outcome = run_engine(_engine(), job, on_event, feedback.isCanceled)
    if outcome.cancelled:
        raise QgsProcessingException("cancelled; the store keeps every tile written before")
    if outcome.error:
        raise QgsProcessingException(outcome.error)
    return outcome.result or {}


def store_beside(raster: str) -> str:
    """The default store of a raster: ``<raster stem>_tilelabel.gpkg`` beside it."""
    base, _ = os.path.splitext(raster)
    return base + "_tilelabel.gpkg"


class _StyleTiles(QgsProcessingLayerPostProcessorInterface):
    """Styles the tiles layer as the panel does, once Processing has loaded it."""

    instance = None  # Processing keeps a reference only: hold one here

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        from .layers import style_tiles
        from .store_reader import label_columns

        style_tiles(layer, label_columns(layer.source().split("|")[0]))


def load_styled_tiles(store: str, context: QgsProcessingContext) -> None:
    """Ask Processing to load the store's tiles layer into the project when the
    algorithm completes, styled by label."""
    details = QgsProcessingContext.LayerDetails(
        f"{os.path.splitext(os.path.basename(store))[0]} tiles", context.project(), "STORE")
    _StyleTiles.instance = _StyleTiles()
    details.setPostProcessor(_StyleTiles.instance)
    context.addLayerToLoadOnCompletion(f"{store}|layername=tiles", details)


class _Algorithm(QgsProcessingAlgorithm):
    name_, title = "", ""

    def name(self) -> str:
        return self.name_

    def displayName(self) -> str:  # noqa: N802
        return self.title

    def group(self) -> str:
        return "TileLabel"

    def groupId(self) -> str:  # noqa: N802
        return "tilelabel"

    def createInstance(self):  # noqa: N802
        return type(self)()

    def _add_model_parameters(self) -> None:
        """Model, device, band mapping and the resolution override: every annotate."""
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model directory", QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", "Bands, e.g. 3,2,1 (see help)", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "ALLOW_GSD_MISMATCH", "Allow a resolution far from the model's",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterEnum(
            "TTA", "Test-time augmentation (4 flips: 4x time; 8 flips and turns: 8x)",
            ["None", "4 flips", "8 flips and turns"], defaultValue=0, optional=True))
        self.addParameter(QgsProcessingParameterNumber(  # the engine's MIN_VALID_FRACTION
            "MIN_VALID", "Skip tiles holding less than this share of real data",
            QgsProcessingParameterNumber.Double, 0.25, True, 0.0, 1.0))

    def _model_arguments(self, parameters, context) -> list[str]:
        """The engine flags of :meth:`_add_model_parameters`' values."""
        args = ["--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        model = self.parameterAsFile(parameters, "MODEL", context) or default_model_dir(
            PluginSettings.load())
        if model:
            args += ["--model", model]
        if self.parameterAsBoolean(parameters, "ALLOW_GSD_MISMATCH", context):
            args.append("--allow-gsd-mismatch")
        tta = TTA_MODES[self.parameterAsEnum(parameters, "TTA", context)]
        if tta != "none":
            args += ["--tta", tta]
        if parameters.get("MIN_VALID") is not None:
            args += ["--min-valid", repr(self.parameterAsDouble(parameters, "MIN_VALID", context))]
        bands = self.parameterAsString(parameters, "BANDS", context).replace(" ", "")
        return args + (["--bands", bands] if bands else [])


class AnnotateRaster(_Algorithm):
    name_, title = "annotate", "Annotate raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Cut the raster into model tiles, predict every label per tile, and write a "
                "TileLabel store (GeoPackage) plus a per-label attention GeoTIFF.<br><br>"
                "<b>Bands</b>: the raster's band numbers that feed the model's bands, in the "
                "model's order (red, green, blue for the RGB models), e.g. 3,2,1 for a "
                "blue-green-red file; empty: matched by the bands' names.<br>"
                "<b>Allow a resolution far from the model's</b>: annotate even when the "
                "raster's pixel size is far from the one the model was trained at (the "
                "labels are then less reliable).<br>"
                "<b>Skip tiles holding less than this share of real data</b>: tiles at the "
                "raster's right and bottom edges (or in its nodata) holding less real data "
                "than this are skipped, as the padding would make up their labels; 0 keeps "
                "every tile that holds any.<br>"
                "<b>Annotation store</b>: empty: &lt;raster&gt;_tilelabel.gpkg beside the "
                "raster; an existing store is updated.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("RASTER", "Raster"))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Extent", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "OVERLAP", "Tile overlap", QgsProcessingParameterNumber.Double, 0.0, False, 0.0, 0.89))
        self._add_model_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(
            "STORE", "Annotation store (empty: beside the raster)",
            "GeoPackage (*.gpkg)", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        store = self.parameterAsFileOutput(parameters, "STORE", context)
        if not store or parameters.get("STORE") == QgsProcessing.TEMPORARY_OUTPUT:
            store = store_beside(raster.source())  # not a temporary file that vanishes
        job = ["annotate", raster.source(), "--out", store, "--overlap",
               str(self.parameterAsDouble(parameters, "OVERLAP", context)),
               *self._model_arguments(parameters, context)]
        if parameters.get("EXTENT"):
            rect = self.parameterAsExtent(parameters, "EXTENT", context)
            crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            job += ["--extent", *(repr(v) for v in (rect.xMinimum(), rect.yMinimum(),
                                                    rect.xMaximum(), rect.yMaximum())),
                    "--extent-crs", crs.authid() or crs.toWkt()]
        result = _run(job, feedback)
        load_styled_tiles(store, context)
        return {"STORE": store, "ATTENTION": result.get("attention"),
                "TILES": result.get("tiles_written")}


class AnnotateRasters(_Algorithm):
    name_, title = "annotate_many", "Annotate rasters into one store"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Annotate several rasters (a region's orthophotos, a year of scenes) into one "
                "TileLabel store, in one job that loads the model once. A raster that cannot "
                "be annotated is reported and skipped; the others go on. Running it again "
                "skips the rasters the model already annotated (resume). Rasters in other "
                "CRSs than the store's have their tiles reprojected into it.<br><br>"
                "<b>Store CRS</b>: empty: an existing store's, else the first raster's. "
                "<b>Bands</b> and the resolution override: as in Annotate raster.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "RASTERS", "Rasters", QgsProcessing.TypeRaster))
        self._add_model_parameters()
        self.addParameter(QgsProcessingParameterCrs("STORE_CRS", "Store CRS", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "STORE", "Annotation store", "GeoPackage (*.gpkg)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, "RASTERS", context)
        store = self.parameterAsFileOutput(parameters, "STORE", context)
        job = ["annotate", *[layer.source() for layer in layers], "--out", store,
               *self._model_arguments(parameters, context)]
        crs = self.parameterAsCrs(parameters, "STORE_CRS", context)
        if crs.isValid():
            job += ["--store-crs", crs.authid() or crs.toWkt()]
        result = _run(job, feedback)
        for raster in result.get("rasters", []):
            if raster["outcome"] == "failed":
                feedback.reportError(f"{raster['raster']}: {raster['message']}")
        load_styled_tiles(store, context)
        return {"STORE": store, "TILES": result.get("tiles_written"),
                "FAILED": result.get("failed", 0)}


class ExportLabelledTiles(_Algorithm):
    name_, title = "export", "Export labelled tiles"

    def shortHelpString(self) -> str:  # noqa: N802
        return "Export the corrected and verified tiles of a store (and optionally image chips)."

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("STORE", "Annotation store",
                                                     extension="gpkg"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Exported tiles", "GeoPackage (*.gpkg)"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "CHIPS", "Image chips folder", optional=True, createByDefault=False))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        store = self.parameterAsFile(parameters, "STORE", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if store and out and os.path.abspath(store) == os.path.abspath(out):
            return False, ("The export file is the annotation store itself; exporting there "
                           "would replace the store. Choose another file.")
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        # a Processing output is replaced, as every algorithm does (the dialog asked); the
        # engine still refuses to replace the store itself
        job = ["export", self.parameterAsFile(parameters, "STORE", context), "--out", out,
               "--overwrite"]
        chips = self.parameterAsString(parameters, "CHIPS", context)
        if chips:
            job += ["--chips", chips]
        result = _run(job, feedback)
        return {"OUTPUT": out, "TILES": result.get("tiles"), "CHIPS": chips or None}


class RetrainModel(_Algorithm):
    name_, title = "retrain", "Retrain model"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Fine-tune a model on the corrected and verified tiles of a store; writes a "
                "new model version whose parent is the given model.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("STORE", "Annotation store",
                                                     extension="gpkg"))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model to fine-tune", QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, 5, False, 1, 500))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "New model directory"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        out = self.parameterAsString(parameters, "OUTPUT", context)
        model = self.parameterAsFile(parameters, "MODEL", context) or default_model_dir(
            PluginSettings.load())
        job = ["train", "--dataset", f"gpkg:{self.parameterAsFile(parameters, 'STORE', context)}",
               "--init-from", model, "--out", out, "--allow-no-val", "--epochs",
               str(self.parameterAsInt(parameters, "EPOCHS", context)),
               "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        result = _run(job, feedback)
        return {"OUTPUT": out, "MODEL_ID": result.get("model_id")}


class TileLabelProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "tilelabel"

    def name(self) -> str:
        return "TileLabel"

    def icon(self) -> QIcon:
        from .plugin import icon_path
        return QIcon(icon_path())

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in (AnnotateRaster(), AnnotateRasters(), ExportLabelledTiles(),
                          RetrainModel()):
            self.addAlgorithm(algorithm)
