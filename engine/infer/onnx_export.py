"""Exporting a model directory's network to ONNX (needs torch; running it does not).

The graph takes normalised tiles ``x`` [B, bands, px, px] (or, for a multi-resolution
model, one input per band group [B, n_bands, px_g, px_g], named after the group) and
returns ``probs`` [B, C] (sigmoid of the logits) and, for models with attention,
``attention`` [B, C, h, w]: exactly what engine.infer.predictor.Predictor returns. The
batch size is dynamic; the tile size is the model's.

Exported without folding batch norms into convolutions (ONNX Runtime fuses them itself
when it loads the graph), every initializer is a tensor of the weights file byte for
byte; a graph written beside the weights then points into ``model.safetensors`` instead
of copying it (see engine.infer.onnx_file). A tensor stored in float16 (``store_half``)
is read as float16 and widened by a Cast node, which ONNX Runtime folds when it loads the
graph: the same float32 values as PyTorch's.

After export the graph is run by ONNX Runtime (when installed) on another random batch,
of another size than the one traced, and compared with PyTorch; a graph that disagrees
(e.g. control flow the tracer froze to the traced batch) is deleted, never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine import __version__
from engine.band_groups import band_groups
from engine.errors import ModelFileError
from engine.infer.onnx_file import (ONNX_FILE, OnnxRecord, network_key, trusted_graph,
                                    write_dir, write_record)
from engine.models.modelfile import load_model
from engine.models.spec import ModelSpec, sha256_file, weights_file

OPSET = 17
PROB_TOLERANCE = 1e-4
ATTENTION_TOLERANCE = 1e-3
SHARE_MIN_BYTES = 1024  # smaller initializers stay in the graph


class _GraphView(nn.Module):
    """The model as ONNX sees it: positional tensors in, (probs, attention) out."""

    def __init__(self, model: nn.Module, group_names: list[str] | None) -> None:
        super().__init__()
        self.model, self.group_names = model, group_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = dict(zip(self.group_names, inputs)) if self.group_names else inputs[0]
        out = self.model(x)
        probs = torch.sigmoid(out.logits)
        return (probs,) if out.attention is None else (probs, out.attention)


def example_inputs(spec: ModelSpec, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random batch in the graph's input layout (name -> array)."""
    rng = np.random.default_rng(seed)
    groups = band_groups(spec.arch_config)
    shapes = ({g.name: (batch, len(g.bands), g.px, g.px) for g in groups} if groups else
              {"x": (batch, len(spec.bands), spec.tile_px, spec.tile_px)})
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _torch_outputs(view: _GraphView, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in view(*(torch.from_numpy(v) for v in inputs.values()))]


def _check_with_onnxruntime(graph: Path, view: _GraphView, inputs: dict[str, np.ndarray]) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        return
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)
    want = _torch_outputs(view, inputs)
    for name, tol, a, b in zip(("probabilities", "attention"),
                               (PROB_TOLERANCE, ATTENTION_TOLERANCE), got, want):
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        if not diff <= tol:
            raise ModelFileError(f"the ONNX graph's {name} differ from PyTorch's by {diff:.2e} "
                                 f"(more than {tol:g}); use --runtime torch for this model")


def _tensor_spans(weights: Path) -> dict[str, tuple[int, int]]:
    """sha1 of each tensor's bytes -> (offset, length) in a safetensors file (an 8-byte
    header size, a JSON header, then the tensors' raw little-endian bytes)."""
    with open(weights, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        spans = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            f.seek(8 + size + start)
            spans[hashlib.sha1(f.read(end - start)).hexdigest()] = (8 + size + start, end - start)
    return spans


def _as_half(tensor) -> bytes | None:
    """The float16 bytes of a float32 initializer whose values are all float16 numbers
    (as a ``store_half`` model's are), else None."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_type != onnx.TensorProto.FLOAT:
        return None
    values = numpy_helper.to_array(tensor)
    half = values.astype("<f2")
    return half.tobytes() if np.array_equal(half.astype(np.float32), values) else None


def _point_at(tensor, weights: Path, span: tuple[int, int]) -> None:
    import onnx
    from onnx.external_data_helper import set_external_data

    set_external_data(tensor, weights.name, offset=span[0], length=span[1])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")


def _widened(proto, tensor, half_bytes: bytes, weights: Path, span: tuple[int, int]) -> None:
    """Replace float32 initializer ``tensor`` by a float16 one read from ``span`` of the
    weights file and a Cast node that gives the graph its float32 values under the old name."""
    import onnx

    name = tensor.name
    half = onnx.TensorProto(name=f"{name}.float16", dims=list(tensor.dims),
                            data_type=onnx.TensorProto.FLOAT16, raw_data=half_bytes)
    _point_at(half, weights, span)
    proto.graph.initializer.remove(tensor)
    proto.graph.initializer.append(half)
    proto.graph.node.insert(0, onnx.helper.make_node("Cast", [half.name], [name],
                                                     to=onnx.TensorProto.FLOAT,
                                                     name=f"widen {name}"))


def share_weights(graph: Path, weights: Path) -> bool:
    """Point every initializer of ``graph`` that is byte for byte a tensor of ``weights``
    (or, widened from float16, one stored in half precision) at that tensor (ONNX external
    data) instead of holding a copy. True when at least one was shared."""
    import onnx

    proto = onnx.load(str(graph))
    spans, shared = _tensor_spans(weights), 0
    for tensor in list(proto.graph.initializer):
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < SHARE_MIN_BYTES:
            continue
        span = spans.get(hashlib.sha1(tensor.raw_data).hexdigest())
        if span is not None:
            _point_at(tensor, weights, span)
            shared += 1
            continue
        half = _as_half(tensor)
        span = spans.get(hashlib.sha1(half).hexdigest()) if half is not None else None
        if span is not None:
            _widened(proto, tensor, half, weights, span)
            shared += 1
    if shared:
        onnx.save(proto, str(graph))
    return shared > 0


def export_onnx(model_dir: Path, force: bool = False) -> tuple[Path, OnnxRecord]:
    """The trusted graph of ``model_dir``, exported now unless one exists (``force``: always)."""
    model_dir = Path(model_dir)
    if not force:
        found = trusted_graph(model_dir)
        if found is not None:
            return found
    model, spec = load_model(model_dir)
    groups = band_groups(spec.arch_config)
    names = [g.name for g in groups] if groups else None
    view = _GraphView(model.eval(), names).eval()
    inputs = example_inputs(spec)
    n_outputs = len(_torch_outputs(view, inputs))
    outputs = ["probs", "attention"][:n_outputs]
    folder = write_dir(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    graph, tmp = folder / ONNX_FILE, folder / f".{ONNX_FILE}.{os.getpid()}.tmp"
    dynamic = {name: {0: "batch"} for name in [*inputs, *outputs]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            torch.onnx.export(view, tuple(torch.from_numpy(v) for v in inputs.values()),
                              str(tmp), input_names=list(inputs), output_names=outputs,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE,
                              do_constant_folding=False)
        weights, recorded = weights_file(model_dir)
        shared = weights.name if folder.resolve() == weights.parent.resolve() and \
            share_weights(tmp, weights) else None
        _check_with_onnxruntime(tmp, view, example_inputs(spec, batch=3, seed=1))
        tmp.replace(graph)
    except ModelFileError:
        raise
    except Exception as exc:  # the exporter's own errors: an operator ONNX cannot express
        raise ModelFileError(f"model {spec.model_id} ({spec.arch}) could not be exported to "
                             f"ONNX ({type(exc).__name__}: {exc}); use --runtime torch") from exc
    finally:
        tmp.unlink(missing_ok=True)
    record = OnnxRecord(weights_sha256=recorded or sha256_file(weights),
                        network_sha256=network_key(model_dir),
                        onnx_sha256=sha256_file(graph), inputs=list(inputs),
                        attention=n_outputs == 2, opset=OPSET, engine_version=__version__,
                        shared_weights=shared)
    write_record(folder, record)
    return graph, record
