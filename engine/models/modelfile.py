"""The model directory: ``model.safetensors`` (weights) + ``model.json`` (everything else).

Weights are safetensors only: a model directory from someone else can never run code.
Weights may be stored in float16 (``store_half``: matrices and kernels only, half the
file, for a model that must fit a size cap such as the plugin archive's); loading always
gives a float32 network. Loading checks that both files exist, that model.json is
complete and consistent, that the weights file is the one model.json was written with
(sha256) and that every tensor fits the architecture; each failure names the file and
what to do.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import ModelFileError
from engine.models.registry import BuildRequest, build
from engine.models.spec import (FORMAT, FORMAT_VERSION, SPEC_FILE, WEIGHTS_FILE, ModelSpec,
                                check_weights, read_spec, sha256_file)

__all__ = ["ModelSpec", "read_spec", "build_model", "save_model", "load_model", "store_half"]


def _first_reason(exc: RuntimeError) -> str:
    """The first concrete mismatch of a load_state_dict error (its first line is only
    'Error(s) in loading state_dict for ...')."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__


def build_model(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """The architecture of ``spec`` with fresh (or ImageNet-pretrained backbone) weights."""
    return build(spec.arch, BuildRequest(spec.arch_config, len(spec.labels), len(spec.bands),
                                         pretrained, spec.label_embeddings, spec.label_graph))


def save_model(model: nn.Module, spec: ModelSpec, directory: Path) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``."""
    spec.validate("the model to save")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    _write(state, spec, Path(directory))
    return Path(directory)


def _write(state: dict[str, torch.Tensor], spec: ModelSpec, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp_weights))
    tmp_weights.replace(weights)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(spec),
           "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights)}}
    tmp = directory / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(directory / SPEC_FILE)


def store_half(directory: Path) -> int:
    """Rewrite the weights of ``directory`` with every float tensor of two or more
    dimensions (convolution kernels, linear and LSTM matrices, embeddings) in float16;
    vectors (biases, batch-norm statistics, per-label scales) stay float32. The file
    shrinks by half; the network still computes in float32 (``load_model`` widens the
    stored values, which are then exact float16 numbers). Returns the tensors halved."""
    model, spec = load_model(directory)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    halved = {k for k, v in state.items() if v.dtype == torch.float32 and v.dim() >= 2}
    _write({k: v.half() if k in halved else v for k, v in state.items()}, spec, Path(directory))
    return len(halved)


def load_model(directory: Path) -> tuple[nn.Module, ModelSpec]:
    """Load a model directory, checking the weights against model.json and the architecture."""
    directory = Path(directory)
    spec = read_spec(directory)
    weights = check_weights(directory)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{weights} is not a readable safetensors file ({exc})") from exc
    state = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
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
