"""The model directory: ``model.safetensors`` (weights) + ``model.json`` (everything else).

Weights are safetensors only: a model directory from someone else can never run code.
Loading checks that both files exist, that model.json is complete and consistent, that
the weights file is the one model.json was written with (sha256) and that every tensor
fits the architecture; each failure names the file and what to do.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine import __version__
from engine.errors import ModelFileError
from engine.models.registry import BuildRequest, build

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


def _first_reason(exc: RuntimeError) -> str:
    """The first concrete mismatch of a load_state_dict error (its first line is only
    'Error(s) in loading state_dict for ...')."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_model(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """The architecture of ``spec`` with fresh (or ImageNet-pretrained backbone) weights."""
    return build(spec.arch, BuildRequest(spec.arch_config, len(spec.labels), len(spec.bands),
                                         pretrained, spec.label_embeddings, spec.label_graph))


def save_model(model: nn.Module, spec: ModelSpec, directory: Path) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``."""
    spec.validate("the model to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, str(weights))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(spec),
           "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)}}
    tmp = directory / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(directory / SPEC_FILE)
    return directory


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


def load_model(directory: Path) -> tuple[nn.Module, ModelSpec]:
    """Load a model directory, checking the weights against model.json and the architecture."""
    directory = Path(directory)
    spec = read_spec(directory)
    doc = json.loads((directory / SPEC_FILE).read_text())
    weights = directory / doc.get("weights", {}).get("file", WEIGHTS_FILE)
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing: copy the whole model directory")
    expected = doc.get("weights", {}).get("sha256")
    if expected and _sha256(weights) != expected:
        raise ModelFileError(f"{weights} does not match {directory / SPEC_FILE} (checksum "
                             "differs): the two files come from different models")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{weights} is not a readable safetensors file ({exc})") from exc
    model = build_model(spec)
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelFileError(f"{weights} does not fit architecture '{spec.arch}' "
                             f"as described in model.json: {_first_reason(exc)}") from exc
    missing = [k for k in model.state_dict() if k not in state
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelFileError(f"{weights} lacks {len(missing)} tensors the architecture "
                             f"'{spec.arch}' needs (first: {missing[0]})")
    return model.eval(), spec
