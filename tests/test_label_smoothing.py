"""Label smoothing: the targets it trains against, the logits it settles on, bad values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import DATA
from engine.errors import TileLabelError
from engine.train.losses import build_loss

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


def test_smoothing_trains_against_targets_pulled_towards_one_half_and_skips_unknown_ones():
    torch.manual_seed(0)
    logits = torch.randn(4, 5)
    targets = torch.randint(0, 2, (4, 5)).float()
    smoothed = build_loss("bce", targets.numpy(), smoothing=0.1)
    assert torch.allclose(smoothed(logits, targets),
                          F.binary_cross_entropy_with_logits(logits, targets * 0.9 + 0.05))
    weak = targets.clone()
    weak[:, 3:] = float("nan")
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(smoothed(logits, weak), logits)
    assert (grad[:, 3:] == 0).all() and (grad[:, :3] != 0).all()


@pytest.mark.parametrize("name", ["bce", "asl"])
def test_with_smoothing_a_present_label_stops_being_pushed_to_certainty(name):
    """Plain BCE keeps pushing a present label's logit up however sure it is; smoothed by
    0.1 the push turns round past the logit of p = 0.95, so logits stay finite."""
    targets = torch.ones(1, 1)
    plain = build_loss(name, targets.numpy())
    smoothed = build_loss(name, targets.numpy(), smoothing=0.1)
    sure = torch.full((1, 1), math.log(0.99 / 0.01), requires_grad=True)  # p = 0.99
    (push,) = torch.autograd.grad(plain(sure, targets), sure)
    (pull,) = torch.autograd.grad(smoothed(sure, targets), sure)
    assert push.item() < 0 < pull.item()  # plain: raise it further; smoothed: lower it


@pytest.mark.parametrize("eps", [-0.1, 0.5, 1.0])
def test_smoothing_outside_zero_to_one_half_is_refused_with_the_fix(eps):
    with pytest.raises(TileLabelError, match=r"label smoothing must be in \[0, 0.5\)"):
        build_loss("bce", torch.ones(2, 2).numpy(), smoothing=eps)


def test_the_cli_refuses_bad_smoothing_before_writing_anything(tmp_path, run_cli):
    out = tmp_path / "m"
    res = run_cli("train", "--dataset", UCM, "--out", out, "--epochs", "1",
                  "--label-smoothing", "0.7")
    assert res.code == 2
    assert "label smoothing must be in [0, 0.5)" in res.err and "Traceback" not in res.err
    assert not out.exists()
