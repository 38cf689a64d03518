"""ONNX Runtime gives the same answers as PyTorch, for every architecture, on real tiles;
a graph is used only when it belongs to the weights; annotate runs where torch is absent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, DEFAULT_MODEL, ROOT as REPO, SAMPLE, SAMPLE_TILES

from engine.infer.onnx_file import ONNX_FILE, SIDECAR_FILE, trusted_graph
from engine.infer.runtime import open_predictor
from engine.models.blank import VARIANTS, blank_model_dir

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"
BEN_V2 = f"bigearthnet-v2:{DATA / 'bigearthnet_v2'}"
PROB_TOL, ATTENTION_TOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def ucm():
    from engine.data.datasets import open_dataset

    return open_dataset(UCM)


def _real_batch(spec, dataset_spec: str, n: int = 6):
    """``n`` real tiles of the dataset, normalised for ``spec``, in the model's layout."""
    from engine.band_groups import band_groups
    from engine.data.datasets import open_dataset
    from engine.train.loader import TrainingView

    data = open_dataset(dataset_spec)
    view = TrainingView([(data, s) for s in data.samples[:n]], spec.bands, spec.tile_px,
                        spec.mean, spec.std, train=False,
                        groups=band_groups(spec.arch_config))
    items = [view[i][0] for i in range(len(view))]
    if isinstance(items[0], dict):
        return {k: torch.stack([x[k] for x in items]).numpy() for k in items[0]}
    return torch.stack(items).numpy()


@pytest.mark.parametrize("arch,variant", VARIANTS, ids=[f"{a}-{v}" if v else a for a, v in VARIANTS])
def test_onnx_runtime_matches_pytorch_on_real_tiles(arch, variant, ucm, tmp_path):
    targets = np.stack([s.target for s in ucm.samples])
    model_dir = blank_model_dir(arch, variant, list(ucm.labels), targets, tmp_path / "m")
    onnx = open_predictor(model_dir, "onnx", "cpu")
    ref = open_predictor(model_dir, "torch", "cpu")
    assert (onnx.runtime, ref.runtime) == ("onnx", "torch")
    batch = _real_batch(ref.spec, BEN_V2 if arch == "kbranch" else UCM)
    (p_onnx, a_onnx), (p_ref, a_ref) = onnx(batch), ref(batch)
    assert np.abs(p_onnx - p_ref).max() < PROB_TOL
    assert a_ref is not None and a_onnx.shape == a_ref.shape
    assert np.abs(a_onnx - a_ref).max() < ATTENTION_TOL
    # the labels differ from tile to tile (the graph is not frozen to one input)
    assert np.abs(p_ref - p_ref.mean(0)).max() > 1e-3


@pytest.mark.parametrize("arch,variant,option,stride", [
    ("deeplift", "agcn", {"label_loss": 1.0, "feature_stride": 16}, 16),  # label term, stride 16
    ("cmgm", "N-R-BiLSTM", {"feature_stride": 16}, 16),                   # F at stride 16
    ("cmgm", "N-R-BiLSTM", {"feature_stride": 16, "part_maps": "competing"}, 16),
], ids=["deeplift-label-loss-stride16", "cmgm-stride16", "cmgm-competing-parts"])
def test_onnx_runtime_matches_pytorch_for_an_architecture_option(arch, variant, option, stride,
                                                                 ucm, tmp_path):
    targets = np.stack([s.target for s in ucm.samples])
    model_dir = blank_model_dir(arch, variant, list(ucm.labels), targets, tmp_path / "m",
                                extra_config=option)
    onnx, ref = open_predictor(model_dir, "onnx", "cpu"), open_predictor(model_dir, "torch", "cpu")
    batch = _real_batch(ref.spec, UCM)
    (p_onnx, a_onnx), (p_ref, a_ref) = onnx(batch), ref(batch)
    assert onnx.runtime == "onnx" and np.abs(p_onnx - p_ref).max() < PROB_TOL
    assert a_onnx.shape[-1] == batch.shape[-1] // stride  # the map's resolution survives
    assert np.abs(a_onnx - a_ref).max() < ATTENTION_TOL


def _gap_linear_dir(ucm, folder: Path, seed: int = 0) -> Path:
    targets = np.stack([s.target for s in ucm.samples])
    return blank_model_dir("gap-linear", None, list(ucm.labels), targets, folder, seed=seed)


def test_a_graph_of_other_weights_is_never_used(ucm, tmp_path):
    model = _gap_linear_dir(ucm, tmp_path / "a")
    open_predictor(model, "onnx", "cpu")
    assert trusted_graph(model) is not None
    # the model is retrained in place: the old graph is stale
    _gap_linear_dir(ucm, model, seed=1)
    assert trusted_graph(model) is None
    fresh = open_predictor(model, "onnx", "cpu")
    ref = open_predictor(model, "torch", "cpu")
    x = _real_batch(ref.spec, UCM, 2)
    assert np.abs(fresh(x)[0] - ref(x)[0]).max() < PROB_TOL
    # a graph copied from another model is foreign
    other = _gap_linear_dir(ucm, tmp_path / "b", seed=2)
    for name in (ONNX_FILE, SIDECAR_FILE):
        shutil.copy(model / name, other / name)
    assert trusted_graph(other) is None


def test_a_tampered_graph_is_not_trusted(ucm, tmp_path):
    model = _gap_linear_dir(ucm, tmp_path / "m")
    open_predictor(model, "onnx", "cpu")
    with open(model / ONNX_FILE, "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"\0" * 16)
    assert trusted_graph(model) is None


def test_a_read_only_model_folder_gets_its_graph_in_the_cache(ucm, tmp_path, monkeypatch):
    import engine.infer.onnx_file as onnx_file

    model = _gap_linear_dir(ucm, tmp_path / "m")
    monkeypatch.setenv("TILELABEL_CACHE", str(tmp_path / "cache"))
    # as a read-only folder (an installed package) looks to its user; root writes anywhere
    real_access = os.access
    monkeypatch.setattr(onnx_file.os, "access", lambda p, mode: False if Path(p) == model
                        else real_access(p, mode))
    open_predictor(model, "onnx", "cpu")
    graph, _ = trusted_graph(model)
    assert graph.is_relative_to(tmp_path / "cache") and not (model / ONNX_FILE).exists()


def test_a_graph_beside_its_weights_reads_them_instead_of_holding_a_copy(ucm, tmp_path):
    model = _gap_linear_dir(ucm, tmp_path / "m")
    predictor = open_predictor(model, "onnx", "cpu")
    graph, record = trusted_graph(model)
    assert record.shared_weights == "model.safetensors"
    assert graph.stat().st_size < (model / "model.safetensors").stat().st_size / 5
    batch = _real_batch(predictor.spec, UCM)
    probs, _ = predictor(batch)
    want, _ = open_predictor(model, "torch", "cpu")(batch)
    assert np.abs(probs - want).max() < PROB_TOL


def test_a_graph_of_half_precision_weights_reads_them_as_stored_and_matches_pytorch(ucm,
                                                                                   tmp_path):
    from engine.models.modelfile import store_half

    model = _gap_linear_dir(ucm, tmp_path / "m")
    store_half(model)
    predictor = open_predictor(model, "onnx", "cpu")
    graph, record = trusted_graph(model)
    assert record.shared_weights == "model.safetensors"
    assert graph.stat().st_size < (model / "model.safetensors").stat().st_size / 5
    batch = _real_batch(predictor.spec, UCM)
    (probs, attention), (want, want_attention) = (predictor(batch),
                                                  open_predictor(model, "torch", "cpu")(batch))
    assert np.abs(probs - want).max() < PROB_TOL
    assert np.abs(attention - want_attention).max() < ATTENTION_TOL


def test_a_swapped_weights_file_stops_a_graph_that_reads_it(ucm, tmp_path):
    model = _gap_linear_dir(ucm, tmp_path / "m")
    open_predictor(model, "onnx", "cpu")
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the same size and model.json: only the bytes differ
    weights.write_bytes(bytes(data))
    assert trusted_graph(model) is None


def test_the_packaged_default_graph_reads_the_packaged_weights():
    _, record = trusted_graph(DEFAULT_MODEL)
    assert record.shared_weights == "model.safetensors"
    assert (DEFAULT_MODEL / ONNX_FILE).stat().st_size < 2_000_000


def test_annotate_on_onnx_and_on_torch_write_the_same_labels(run_cli, tmp_path):
    import sqlite3

    stores = {}
    for runtime in ("onnx", "torch"):
        store = tmp_path / f"{runtime}.gpkg"
        result = run_cli("annotate", SAMPLE, "--out", store, "--runtime", runtime,
                         "--json-progress")
        assert result.code == 0, result.err
        summary = [json.loads(l) for l in result.out.splitlines() if l.startswith("{")][-1]
        assert summary["event"] == "result" and summary["runtime"] == runtime
        with sqlite3.connect(store) as conn:
            columns = [r[1] for r in conn.execute("PRAGMA table_info(tiles)")
                       if r[1].startswith("p_")]
            stores[runtime] = conn.execute(f"SELECT tile_id, labels, {', '.join(columns)} "
                                           "FROM tiles ORDER BY tile_id").fetchall()
    assert len(stores["onnx"]) == SAMPLE_TILES
    assert [r[:2] for r in stores["onnx"]] == [r[:2] for r in stores["torch"]]
    p_onnx = np.array([r[2:] for r in stores["onnx"]])
    p_torch = np.array([r[2:] for r in stores["torch"]])
    assert np.abs(p_onnx - p_torch).max() < PROB_TOL


BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
from engine.cli import main
code = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch imported"
sys.exit(code)
"""


def _without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_annotate_correct_and_export_run_where_torch_cannot_be_imported(tmp_path):
    store = tmp_path / "s.gpkg"
    done = _without_torch("annotate", SAMPLE, "--out", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "on onnx (cpu)" in done.stdout
    import sqlite3

    with sqlite3.connect(store) as conn:
        tile = conn.execute("SELECT tile_id FROM tiles LIMIT 1").fetchone()[0]
    assert _without_torch("correct", store, "--tile", tile, "--add", "water",
                          cwd=tmp_path).returncode == 0
    assert _without_torch("export", store, "--out", tmp_path / "e.gpkg",
                          cwd=tmp_path).returncode == 0
    assert _without_torch("models", "info", DEFAULT_MODEL,
                          cwd=tmp_path).returncode == 0


def test_without_torch_a_model_lacking_its_graph_is_refused_with_the_fix(ucm, tmp_path):
    model = _gap_linear_dir(ucm, tmp_path / "m")
    done = _without_torch("annotate", SAMPLE, "--out", tmp_path / "s.gpkg", "--model", model,
                          "--allow-gsd-mismatch", cwd=tmp_path)
    assert done.returncode == 2
    assert "export-onnx" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s.gpkg").exists()


def test_training_without_torch_says_which_install_adds_it(tmp_path):
    done = _without_torch("train", "--dataset", f"ucmerced:{DATA / 'ucmerced_mini'}", "--out",
                          tmp_path / "m", cwd=tmp_path)
    assert done.returncode == 2 and "Install engine" in done.stderr
    assert not (tmp_path / "m").exists()
