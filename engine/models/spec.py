"""What a model directory says about its model, read without PyTorch.

``model.json`` (a :class:`ModelSpec`) describes a model: labels, bands, resolution,
normalisation, thresholds, architecture options, how it was trained. Reading and checking
it needs no torch, so the annotate-only engine (ONNX Runtime) and every store command stay
light; the weights themselves are loaded by engine.models.modelfile.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import ModelFileError

FORMAT = "tilelabel-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


@dataclass
class ModelSpec:
    """Everything about a trained model except its weights (the model.json contents).

    bands: input band names in model order (matched to a raster's band descriptions).
    gsd_m: ground sample distance the model was trained at, metres per pixel.
    tile_px: tile side in pixels fed to the model.
    mean/std: per-band normalisation applied after scaling pixel values to [0, 1].
    thresholds: per-label decision thresholds on probabilities.
    """

    model_id: str
    arch: str
    labels: list[str]
    bands: list[str]
    gsd_m: float
    tile_px: int
    mean: list[float]
    std: list[float]
    arch_config: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] | None = None
    label_graph: dict[str, Any] | None = None
    label_embeddings: list[list[float]] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    description: str = ""
    engine_version: str = __version__

    def label_thresholds(self) -> list[float]:
        return list(self.thresholds) if self.thresholds else [0.5] * len(self.labels)

    def validate(self, where: str) -> None:
        """Raise ModelFileError when a field has the wrong type or the fields disagree."""
        problems = self._type_problems()
        if problems:
            raise ModelFileError(f"{where} has fields of the wrong type: " + "; ".join(problems)
                                 + ". Restore model.json from the model's original copy")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            problems.append("'labels' must be a non-empty list of distinct names")
        if not self.bands:
            problems.append("'bands' must name at least one input band")
        if not (len(self.mean) == len(self.std) == len(self.bands)):
            problems.append(f"'mean' and 'std' need one value per band ({len(self.bands)})")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.mean):
            problems.append("'mean' values must be finite numbers")
        if not all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in self.std):
            problems.append("'std' values must be positive finite numbers")
        if not self.gsd_m > 0:
            problems.append("'gsd_m' must be a positive number of metres per pixel")
        if not self.tile_px >= 32:
            problems.append("'tile_px' must be at least 32")
        if self.thresholds is not None and len(self.thresholds) != len(self.labels):
            problems.append("'thresholds' needs one value per label")
        if self.label_embeddings is not None and len(self.label_embeddings) != len(self.labels):
            problems.append(f"'label_embeddings' has {len(self.label_embeddings)} vectors for "
                            f"{len(self.labels)} labels (one per label)")
        graph_labels = (self.label_graph or {}).get("labels")
        if graph_labels is not None and list(graph_labels) != list(self.labels):
            problems.append("'label_graph' was mined for other labels than 'labels' "
                            f"({len(graph_labels)} against {len(self.labels)})")
        if problems:
            raise ModelFileError(f"{where} is inconsistent: " + "; ".join(problems))


    def _type_problems(self) -> list[str]:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def names(v: Any) -> bool:
            return isinstance(v, list) and all(isinstance(x, str) for x in v)

        def numbers(v: Any) -> bool:
            return isinstance(v, list) and all(number(x) for x in v)

        checks = [("model_id", isinstance(self.model_id, str), "a text"),
                  ("arch", isinstance(self.arch, str), "a text"),
                  ("labels", names(self.labels), "a list of names"),
                  ("bands", names(self.bands), "a list of band names"),
                  ("gsd_m", number(self.gsd_m), "a number"),
                  ("tile_px", isinstance(self.tile_px, int) and not isinstance(self.tile_px, bool),
                   "a whole number"),
                  ("mean", numbers(self.mean), "a list of numbers"),
                  ("std", numbers(self.std), "a list of numbers"),
                  ("arch_config", isinstance(self.arch_config, dict), "an object"),
                  ("thresholds", self.thresholds is None or numbers(self.thresholds),
                   "a list of numbers")]
        return [f"'{name}' must be {kind}" for name, ok, kind in checks if not ok]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_spec(directory: Path) -> ModelSpec:
    """Read and check ``model.json`` of a model directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"model directory not found: {directory} (pass --model with a "
                             "directory holding model.json and model.safetensors)")
    path = directory / SPEC_FILE
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: a model directory needs model.json and "
                             "model.safetensors, as written by 'tilelabel train'")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}); restore it from the "
                             "model's original copy") from exc
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a TileLabel model description "
                             f"(format={doc.get('format')!r})")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path} uses model format {doc['format_version']}, newer than "
                             f"this engine's {FORMAT_VERSION}: update TileLabel")
    known = set(ModelSpec.__dataclass_fields__)
    fields = {k: v for k, v in doc.items() if k in known}
    try:
        spec = ModelSpec(**fields)
    except TypeError as exc:
        raise ModelFileError(f"{path} lacks required fields ({exc})") from exc
    spec.validate(str(path))
    return spec


def weights_file(directory: Path) -> tuple[Path, str | None]:
    """The weights file model.json names and the sha256 it was written with."""
    doc = json.loads((Path(directory) / SPEC_FILE).read_text())
    entry = doc.get("weights", {})
    return Path(directory) / entry.get("file", WEIGHTS_FILE), entry.get("sha256")


def check_weights(directory: Path) -> Path:
    """The weights file of a model directory, checked against the sha256 model.json records."""
    weights, expected = weights_file(directory)
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing: copy the whole model directory")
    if expected and sha256_file(weights) != expected:
        raise ModelFileError(f"{weights} does not match {Path(directory) / SPEC_FILE} (checksum "
                             "differs): the two files come from different models")
    return weights
