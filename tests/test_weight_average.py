"""The moving average of the weights: its arithmetic, and a training run keeping it."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import DATA
from engine.errors import TileLabelError
from engine.train.weight_average import WeightAverage

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


def _set(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(value)


def _averaged_then_moved(decay: float, start: float, now: float) -> tuple[nn.Linear, WeightAverage]:
    """A model whose average began at ``start`` and whose weights are now ``now``."""
    model = nn.Linear(2, 1)
    _set(model, start)
    average = WeightAverage(model, decay)
    _set(model, now)
    return model, average


def test_the_average_follows_the_weights_with_a_warm_up_of_its_decay():
    model = nn.Linear(2, 1)
    _set(model, 0.0)
    average = WeightAverage(model, decay=0.99)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        _set(model, value)
        average.update(model)
        d = min(0.99, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, 0.31: the start is not held back
        expected = d * expected + (1 - d) * value
    assert average.weights["weight"].flatten().tolist() == pytest.approx([expected] * 2)
    assert 2.0 < expected < 4.0  # between the first and the last weights, nearer the last


def test_the_averaged_weights_apply_inside_the_block_only():
    model, average = _averaged_then_moved(0.5, start=1.0, now=3.0)
    average.update(model)
    with average.applied(model):
        inside = float(model.bias.detach())
    assert inside == pytest.approx(0.1 * 1.0 + 0.9 * 3.0)
    assert float(model.bias.detach()) == 3.0  # the live weights come back for the next step
    with pytest.raises(RuntimeError), average.applied(model):
        raise RuntimeError("a failed validation")
    assert float(model.bias.detach()) == 3.0


def test_a_restart_forgets_the_earlier_stage():
    model, average = _averaged_then_moved(0.9, start=1.0, now=5.0)
    average.restart(model)
    assert float(average.weights["bias"]) == 5.0 and average.updates == 0


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_zero_one_is_refused_with_the_fix(decay):
    with pytest.raises(TileLabelError, match="between 0 and 1"):
        WeightAverage(nn.Linear(1, 1), decay)


def test_a_run_with_a_weight_average_keeps_the_average_not_the_last_step(tmp_path, run_cli):
    out = tmp_path / "m"
    res = run_cli("train", "--dataset", UCM, "--out", out, "--epochs", "1", "--image-size",
                  "64", "--batch-size", "16", "--lr", "3e-3", "--weight-average", "0.9")
    assert res.code == 0, res.err
    spec = json.loads((out / "model.json").read_text())
    assert spec["training"]["config"]["weight_average"] == 0.9
    kept = load_file(str(out / "model.safetensors"))
    ckpt = load_file(str(out / "checkpoint" / "state.safetensors"))
    floats = [k for k in kept if kept[k].is_floating_point() and f"average.{k}" in ckpt]
    assert floats
    for key in floats:
        torch.testing.assert_close(kept[key], ckpt[f"average.{key}"], msg=key)
    moved = [k for k in floats if not torch.allclose(ckpt[f"model.{k}"], ckpt[f"average.{k}"])]
    assert moved  # the last step's weights are not what was kept
