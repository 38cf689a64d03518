"""Running a model's exported ONNX graph with ONNX Runtime (no torch)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.infer.onnx_file import OnnxRecord
from engine.infer.predictor_base import TilePredictor
from engine.models.spec import ModelSpec


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class OnnxPredictor(TilePredictor):
    """The ONNX Runtime runtime, on the CPU or ONNX Runtime's CUDA provider."""

    runtime = "onnx"

    def __init__(self, graph: Path, record: OnnxRecord, spec: ModelSpec, device: str = "cpu",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(spec)
        self.record, self.device_type = record, device
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle compute threads sleep instead of spinning: the tile reader shares the cores
        # (faster end to end on 2 cores, and no slower alone: benchmarks/annotate_speed.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                     else ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelFileError(f"ONNX Runtime cannot load {graph} ({exc}); delete it (it is "
                                 "made again) or use --runtime torch") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]
        n_out = self.session.get_outputs()[0].shape[1]
        if isinstance(n_out, int) and n_out != len(spec.labels):
            raise ModelFileError(f"{graph} gives {n_out} labels but model.json lists "
                                 f"{len(spec.labels)}: the graph belongs to another model; "
                                 "delete it (it is made again)")

    def __call__(self, batch: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        feeds = (dict(batch) if isinstance(batch, dict) else {self.record.inputs[0]: batch})
        feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        outputs = self.session.run(self.output_names, feeds)
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)
