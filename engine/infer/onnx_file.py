"""Where a model's ONNX graph lives and whether it can be trusted (no torch needed).

The graph of a model directory is exported by the engine itself from the safetensors
weights (engine.infer.onnx_export) and written as ``model.onnx`` with a sidecar
``model.onnx.json`` recording the sha256 of the weights it was made from and of the graph
itself. It goes beside the weights when that folder is writable, otherwise into a cache
folder keyed by the weights' checksum (``$TILELABEL_CACHE`` or ``~/.cache/tilelabel``).

A graph beside the weights keeps no copy of them: its initializers point into
``model.safetensors`` (ONNX external data: file, offset, length), so a model folder holds
its weights once (the packaged default model and the plugin zip stay half the size). A
graph in the cache holds its own weights.

A graph is used only when its sidecar names this engine's ONNX format, the weights'
current checksum (as model.json records it, and of the file itself when the graph reads
its weights from it), the checksum of the model.json fields the
network is built from (architecture, its options, label and band counts, tile size, label
graph and embeddings) and the graph's own current checksum. A stale graph (the model was
retrained or its model.json edited in place) or a foreign one (copied from another model)
is ignored and made again; it is never run.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.models.spec import read_spec, sha256_file, weights_file

ONNX_FILE = "model.onnx"
SIDECAR_FILE = "model.onnx.json"
ONNX_FORMAT = "tilelabel-onnx"
ONNX_FORMAT_VERSION = 2      # 2: the graph may read its weights from model.safetensors
READABLE_VERSIONS = (1, 2)


@dataclass
class OnnxRecord:
    """The sidecar of an exported graph."""

    weights_sha256: str
    network_sha256: str         # network_key() of the model.json it was exported with
    onnx_sha256: str
    inputs: list[str]           # "x", or the band group names of a multi-resolution model
    attention: bool             # the graph has an "attention" output
    opset: int
    engine_version: str
    format: str = ONNX_FORMAT
    format_version: int = ONNX_FORMAT_VERSION
    shared_weights: str | None = None  # the weights file the graph reads its tensors from


def cache_root() -> Path:
    return Path(os.environ.get("TILELABEL_CACHE") or Path.home() / ".cache" / "tilelabel")


def _weights_sha(model_dir: Path) -> str:
    """The weights' checksum as model.json records it (computed when it records none)."""
    weights, recorded = weights_file(model_dir)
    return recorded or sha256_file(weights)


def network_key(model_dir: Path) -> str:
    """Checksum of the model.json fields that shape the exported network."""
    spec = read_spec(model_dir)
    fields = {"arch": spec.arch, "arch_config": spec.arch_config, "labels": len(spec.labels),
              "bands": len(spec.bands), "tile_px": spec.tile_px,
              "label_graph": spec.label_graph, "label_embeddings": spec.label_embeddings}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def candidate_dirs(model_dir: Path) -> list[Path]:
    """Where a graph of ``model_dir`` may be: beside the weights, then the cache."""
    return [Path(model_dir), cache_root() / "onnx" / _weights_sha(model_dir)[:32]]


def write_dir(model_dir: Path) -> Path:
    """Where a new graph goes: beside the weights if that folder is writable, else the cache."""
    model_dir = Path(model_dir)
    if os.access(model_dir, os.W_OK):
        return model_dir
    return candidate_dirs(model_dir)[1]


def read_record(folder: Path) -> OnnxRecord | None:
    path = Path(folder) / SIDECAR_FILE
    try:
        doc = json.loads(path.read_text())
        return OnnxRecord(**doc)
    except (OSError, ValueError, TypeError):
        return None


def trusted_graph(model_dir: Path) -> tuple[Path, OnnxRecord] | None:
    """The graph of ``model_dir`` that matches its current weights, or None."""
    weights_sha, network = _weights_sha(model_dir), network_key(model_dir)
    for folder in candidate_dirs(model_dir):
        record, graph = read_record(folder), Path(folder) / ONNX_FILE
        if (record is None or not graph.is_file() or record.format != ONNX_FORMAT
                or record.format_version not in READABLE_VERSIONS
                or record.weights_sha256 != weights_sha or record.network_sha256 != network):
            continue
        if sha256_file(graph) == record.onnx_sha256 and _shared_weights_intact(graph, record):
            return graph, record
    return None


def _shared_weights_intact(graph: Path, record: OnnxRecord) -> bool:
    """A graph that reads its tensors from the weights file runs only on the very bytes
    it was exported from (model.json's checksum alone would not see a swapped file)."""
    if not record.shared_weights:
        return True
    if Path(record.shared_weights).name != record.shared_weights:
        return False  # only a file beside the graph, never a path elsewhere
    weights = graph.parent / record.shared_weights
    return weights.is_file() and sha256_file(weights) == record.weights_sha256


def write_record(folder: Path, record: OnnxRecord) -> None:
    tmp = Path(folder) / (SIDECAR_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(Path(folder) / SIDECAR_FILE)
