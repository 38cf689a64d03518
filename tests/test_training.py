"""Training, evaluation and fine-tuning through the CLI, on real data in tests/data."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from conftest import DATA, ROOT, UCM_LABELS
from engine.data.datasets import open_dataset
from engine.metrics import multilabel_metrics

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"
FAST = ["--image-size", "128", "--batch-size", "16", "--freeze-backbone", "--lr", "1e-2"]
SMALL = ["--image-size", "64", "--batch-size", "16", "--lr", "3e-3"]


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained 3 epochs on the UC Merced excerpt (frozen ImageNet backbone)."""
    from engine.cli import main

    out = tmp_path_factory.mktemp("train") / "model"
    assert main(["train", "--dataset", UCM, "--out", str(out), "--epochs", "3", *FAST]) == 0
    return out


def test_short_training_beats_chance_on_the_validation_split(trained):
    spec = json.loads((trained / "model.json").read_text())
    val = open_dataset(UCM).split("val")
    targets = np.stack([s.target for s in val])
    rng = np.random.default_rng(0)
    chance = np.mean([multilabel_metrics(rng.random(targets.shape), targets)["mAP_macro"]
                      for _ in range(200)])
    assert spec["metrics"]["val"]["mAP_macro"] > chance + 0.15
    assert spec["labels"] == UCM_LABELS and spec["tile_px"] == 128
    assert len(spec["mean"]) == 3 and all(0 < m < 1 for m in spec["mean"])  # from train split
    assert spec["training"]["n_train"] == 84 and len(spec["training"]["history"]) == 3
    assert spec["label_graph"]["tau"] == 0.4
    assert np.array(spec["label_embeddings"]).shape == (17, 384)  # cached: no text model at inference


def test_evaluate_reports_metrics_and_warns_about_training_images(trained, tmp_path, run_cli):
    report = tmp_path / "report.json"
    res = run_cli("evaluate", "--model", trained, "--dataset", UCM, "--report", report)
    assert res.code == 0, res.err
    assert "were used to train" in res.err
    m = json.loads(report.read_text())
    for key in ("mAP_macro", "mAP_micro", "OP", "OR", "OF1", "CP", "CR", "CF1", "F1_macro",
                "EF1", "per_class", "n_images"):
        assert key in m
    assert m["n_images"] == 126 and "airplane" in m["per_class"]
    assert "mAP_macro" in res.out and "support" in res.out  # the readable table
    res = run_cli("evaluate", "--model", trained, "--dataset", UCM, "--split", "test")
    assert res.code == 0 and "were used to train" not in res.err


def test_trained_model_annotates_a_raster(trained, tmp_path, run_cli):
    from conftest import SAMPLE

    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "s.gpkg", "--model", trained,
                  "--no-attention", "--json-progress")
    assert res.code == 0, res.err
    assert _events(res.out)[-1]["tiles_written"] > 0


def test_fine_tuning_needs_the_same_label_vocabulary(trained, tmp_path, run_cli):
    ben = f"bigearthnet-v2:{DATA / 'bigearthnet_v2'}"
    res = run_cli("train", "--dataset", ben, "--out", tmp_path / "m", "--init-from", trained,
                  "--epochs", "1")
    assert res.code == 2 and "does not match --init-from" in res.err


def test_fine_tuning_records_its_parent(trained, tmp_path, run_cli):
    res = run_cli("train", "--dataset", UCM, "--out", tmp_path / "ft", "--init-from", trained,
                  "--epochs", "1", *FAST[2:], "--json-progress")
    assert res.code == 0, res.err
    stages = list(dict.fromkeys(e["stage"] for e in _events(res.out) if e["event"] == "progress"))
    assert stages == ["reading the training data", "loading the model", "train",
                      "calibrating the thresholds", "saving the model"]  # what the panel shows
    spec = json.loads((tmp_path / "ft" / "model.json").read_text())
    parent = json.loads((trained / "model.json").read_text())
    assert spec["parent"] == parent["model_id"] and spec["tile_px"] == 128


def test_refit_trains_on_train_and_val_with_the_reference_epoch_and_thresholds(
        trained, tmp_path, run_cli):
    before = (trained / "model.json").read_bytes()
    res = run_cli("train", "--refit", trained, "--dataset", UCM, "--out", tmp_path / "dev")
    assert res.code == 0, res.err
    assert (trained / "model.json").read_bytes() == before  # the reference is kept as it was
    ref, spec = json.loads(before), json.loads((tmp_path / "dev" / "model.json").read_text())
    data = open_dataset(UCM)
    val = {s.name for s in data.split("val")}
    test = {s.name for s in data.split("test")}
    seen = set(spec["training"]["train_images"])
    assert val <= seen and not seen & test  # the whole development data, never the test split
    assert spec["training"]["n_train"] == ref["training"]["n_train"] + len(val)
    assert len(spec["training"]["history"]) == ref["training"]["best_epoch"] + 1
    assert spec["thresholds"] == ref["thresholds"] and spec["thresholds"] is not None
    assert spec["training"]["refit"]["of"] == ref["model_id"]
    assert spec["model_id"] == ref["model_id"] + "-dev"
    assert spec["metrics"]["val"] == {}  # no held-out figure: the validation split was trained on


def test_refit_refuses_flags_that_would_change_the_recipe(trained, tmp_path, run_cli):
    for extra in (["--epochs", "5"], ["--recipe", "recipes/default.toml"],
                  ["--image-size", "64"]):
        res = run_cli("train", "--refit", trained, "--dataset", UCM, "--out", tmp_path / "m",
                      *extra)
        assert res.code == 2 and "--refit" in res.err and "Traceback" not in res.err, extra
    assert not (tmp_path / "m").exists()


def test_empty_split_is_refused(tmp_path, run_cli):
    root = tmp_path / "ucm"
    shutil.copytree(DATA / "ucmerced_mini", root)
    table = root / "LandUse_Multilabeled.txt"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split("\t")[0].endswith("00")]) + "\n")
    res = run_cli("train", "--dataset", f"ucmerced:{root}", "--out", tmp_path / "m", "--epochs", "1")
    assert res.code == 2 and "split" in res.err and "is empty" in res.err


def test_unreadable_image_is_refused_with_its_name(tmp_path, run_cli):
    root = tmp_path / "ucm"
    shutil.copytree(DATA / "ucmerced_mini", root)
    (root / "Images" / "beach" / "beach00.jpg").write_bytes(b"not a jpeg")
    res = run_cli("train", "--dataset", f"ucmerced:{root}", "--out", tmp_path / "m",
                  "--epochs", "1", *FAST)
    assert res.code == 2 and "beach00.jpg" in res.err and "Traceback" not in res.err


def test_bigearthnet_v2_trains_on_twelve_bands(tmp_path, run_cli):
    res = run_cli("train", "--dataset", f"bigearthnet-v2:{DATA / 'bigearthnet_v2'}", "--out",
                  tmp_path / "m", "--epochs", "1", "--image-size", "64", "--batch-size", "4")
    assert res.code == 0, res.err
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    # 120 px patches at 10 m resized to 64 px: the model sees 1.2 km at 18.75 m/px
    assert len(spec["bands"]) == 12 and spec["gsd_m"] == 18.75 and len(spec["labels"]) == 19


def test_resume_after_a_kill_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    # with a weight average, so the checkpoint must carry the average as well as the weights
    args = ["train", "--dataset", UCM, "--epochs", "3", *SMALL, "--weight-average", "0.9"]
    straight = _cli(*args, "--out", tmp_path / "a")
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args, "--out",
                             str(tmp_path / "b"), "--json-progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:
        if '"epoch 1/3' in line:  # two epochs left: the stop lands before the run ends
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    stopped = [json.loads(l) for l in rest.splitlines() if l.startswith("{")][-1]
    assert "--resume" in stopped["message"] and "store" not in stopped["message"]
    assert not (tmp_path / "b" / "model.json").exists()
    resumed = _cli(*args, "--out", tmp_path / "b", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_checkpoint_keeps_its_weights_and_their_epoch_in_one_file(tmp_path):
    # one file, replaced by one rename: a stop can never pair one epoch's weights with
    # another epoch's state (two files renamed one after the other could)
    from engine.train.checkpoint import load_checkpoint, save_checkpoint
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    (tmp_path / "state.json").write_text('{"epoch": 0}')  # an older run's, out of date
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path, model, best, optimizer, {"epoch": 4, "stale": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]
    again = torch.nn.Linear(3, 2)
    state, kept, _ = load_checkpoint(tmp_path, again, torch.optim.AdamW(again.parameters()))
    assert state["epoch"] == 4 and state["stale"] == 1
    torch.testing.assert_close(again.weight, model.weight)
    torch.testing.assert_close(kept["bias"], model.bias.detach())


def test_a_checkpoint_written_with_its_state_beside_it_still_resumes(tmp_path):
    # the layout before 2026-12-07: tensors in state.safetensors, the JSON in state.json
    from engine.train.checkpoint import load_checkpoint
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_file({f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "state.safetensors"))
    (tmp_path / "state.json").write_text(json.dumps(
        {"epoch": 2, "param_groups": optimizer.state_dict()["param_groups"]}))
    state, _, _ = load_checkpoint(tmp_path, torch.nn.Linear(3, 2), optimizer)
    assert state["epoch"] == 2


def test_distributed_training_with_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "engine.cli", "train", "--dataset", UCM, "--out", str(out), "--epochs", "1",
         "--device", "cpu", *SMALL],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    spec = json.loads((out / "model.json").read_text())
    assert spec["training"]["world_size"] == 2
    assert spec["metrics"]["val"]["n_images"] == 21  # gathered from both ranks, no repeats


def test_graph_command_writes_json_and_png(tmp_path, run_cli):
    res = run_cli("graph", "--dataset", UCM, "--out", tmp_path / "g.json", "--png", tmp_path / "g.png")
    assert res.code == 0, res.err
    doc = json.loads((tmp_path / "g.json").read_text())
    assert {"from": "ship", "to": "water"} in [{k: e[k] for k in ("from", "to")} for e in doc["edges"]]
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seed_changes_the_weights_but_not_the_split_and_split_seed_changes_the_split(
        tmp_path):
    from engine.cli import main

    def run(name: str, *seeds: str) -> tuple[dict, dict]:
        out = tmp_path / name
        assert main(["train", "--dataset", UCM, "--out", str(out), "--epochs", "1", *FAST,
                     *seeds]) == 0
        return json.loads((out / "model.json").read_text()), load_file(out / "model.safetensors")

    spec0, weights0 = run("seed0")  # seed 0, split seed 0
    spec1, weights1 = run("seed1", "--seed", "1")
    spec2, _ = run("split1", "--split-seed", "1")
    assert spec1["training"]["train_images"] == spec0["training"]["train_images"]
    assert (spec1["training"]["seed"], spec1["training"]["split_seed"]) == (1, 0)
    head = [k for k in weights1 if not k.startswith("backbone.")]
    assert any(not np.allclose(weights0[k], weights1[k]) for k in head)
    assert spec2["training"]["train_images"] != spec0["training"]["train_images"]
