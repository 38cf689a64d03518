"""Choosing the runtime that runs a model for annotate: PyTorch or ONNX Runtime.

``auto`` (the default) uses ONNX Runtime on the CPU when it is installed: on this 2-core
CPU its forward pass is about 3 x faster than PyTorch's (benchmarks/annotate_speed.py).
On a CUDA GPU ``auto`` uses PyTorch (float16 autocast); ONNX Runtime's CUDA provider is
taken only when asked for (``--runtime onnx --device cuda``), as no GPU was available to
measure which of the two is faster. Without PyTorch installed (the annotate-only engine)
``auto`` is ONNX Runtime, whatever the device.

The ONNX graph of a model is made from its safetensors weights on first use (needs
PyTorch) and cached (engine.infer.onnx_file); a model without a graph cannot run where
PyTorch is missing, and the error says how to make one.
"""
from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

from engine.errors import ModelFileError, TileLabelError
from engine.infer.onnx_file import trusted_graph
from engine.infer.predictor_base import TilePredictor
from engine.infer.tta import check_tta, with_tta
from engine.models.spec import ModelSpec, check_weights, read_spec
from engine.progress import Reporter

RUNTIMES = ("auto", "torch", "onnx")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _gpu_driver_present() -> bool:
    """An NVIDIA driver on this machine (cheap: torch is imported only when there is one)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def _cuda_usable() -> bool:
    if not (installed("torch") and _gpu_driver_present()):
        return False
    import torch

    return torch.cuda.is_available()


def choose_runtime(runtime: str, device: str) -> tuple[str, str]:
    """(runtime, device) to use for ``--runtime`` and ``--device`` as given."""
    if runtime not in RUNTIMES:
        raise TileLabelError(f"unknown runtime '{runtime}'; use {', '.join(RUNTIMES)}")
    if device not in ("auto", "cpu", "cuda"):
        raise TileLabelError(f"unknown device '{device}'; use auto, cpu or cuda")
    has_torch, has_ort = installed("torch"), installed("onnxruntime")
    if runtime == "onnx" and not has_ort:
        raise TileLabelError("--runtime onnx needs ONNX Runtime: pip install onnxruntime "
                             "(or use --runtime torch)")
    if runtime == "torch" and not has_torch:
        raise TileLabelError("--runtime torch needs PyTorch, which this engine was installed "
                             "without; use --runtime onnx, or install tilelabel[train]")
    if not (has_torch or has_ort):
        raise TileLabelError("neither ONNX Runtime nor PyTorch is installed: pip install "
                             "onnxruntime (annotate only) or tilelabel[train]")
    if device == "auto":
        device = "cuda" if _cuda_usable() else "cpu"
    if runtime == "auto":
        runtime = "onnx" if has_ort and (device == "cpu" or not has_torch) else "torch"
    if device == "cuda" and runtime == "torch" and not _cuda_usable():
        raise TileLabelError("--device cuda was asked for but no CUDA GPU is visible to "
                             "PyTorch; use --device cpu or auto")
    return runtime, device


def _onnx_predictor(model_dir: Path, spec: ModelSpec, device: str, threads: int | None,
                    reporter: Reporter) -> TilePredictor:
    from engine.infer.onnx_predictor import OnnxPredictor

    found = trusted_graph(model_dir)
    if found is None:
        if not installed("torch"):
            raise ModelFileError(f"model {spec.model_id} has no ONNX graph matching its weights "
                                 f"and PyTorch is not installed to make one: run 'tilelabel "
                                 f"models export-onnx {model_dir}' where PyTorch is installed, "
                                 "then copy the model folder here")
        from engine.infer.onnx_export import export_onnx

        reporter.log(f"exporting {spec.model_id} to ONNX (once; cached for later runs)")
        found = export_onnx(model_dir)
    graph, record = found
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise TileLabelError("ONNX Runtime here has no CUDA provider: install "
                                 "onnxruntime-gpu, or use --runtime torch --device cuda")
    return OnnxPredictor(graph, record, spec, device, threads)


def _torch_predictor(model_dir: Path, device: str) -> TilePredictor:
    import torch

    from engine.infer.predictor import Predictor
    from engine.models.modelfile import load_model

    model, spec = load_model(model_dir)
    return Predictor(model, spec, torch.device(device))


def open_predictor(model_dir: Path, runtime: str = "auto", device: str = "auto",
                   threads: int | None = None, reporter: Reporter | None = None,
                   tta: str = "none") -> TilePredictor:
    """A predictor for the model in ``model_dir`` on the chosen runtime and device,
    averaging over the views of test-time augmentation ``tta`` (engine/infer/tta.py).

    ``auto`` falls back to PyTorch (with a warning) when a model's graph cannot be
    exported or fails its check against PyTorch; an explicit ``onnx`` fails instead."""
    reporter = reporter or Reporter(json_lines=True, stream=io.StringIO())  # silent
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)  # a broken model directory is named before anything else
    check_tta(tta)
    return with_tta(_runtime_predictor(model_dir, spec, runtime, device, threads, reporter), tta)


def _runtime_predictor(model_dir: Path, spec: ModelSpec, runtime: str, device: str,
                       threads: int | None, reporter: Reporter) -> TilePredictor:
    asked = runtime
    runtime, device = choose_runtime(runtime, device)
    if runtime == "torch":
        return _torch_predictor(model_dir, device)
    check_weights(model_dir)  # the graph is made from these: they must be the model's
    try:
        return _onnx_predictor(model_dir, spec, device, threads, reporter)
    except ModelFileError as exc:
        if asked != "auto" or not installed("torch"):
            raise
        reporter.log(f"ONNX Runtime cannot run {spec.model_id} ({exc}); using PyTorch", "warning")
        return _torch_predictor(model_dir, device)
