"""The asymmetric loss's settings as recipe keys: what they change, and what is refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import DATA
from engine.errors import TileLabelError
from engine.train.losses import AslSettings, build_loss
from engine.train.recipe import load_recipe, make_config
from engine.train.trainer import asl_settings

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


def test_without_focusing_or_margin_the_asymmetric_loss_is_bce_summed_over_labels():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 5), torch.randint(0, 2, (4, 5)).float()
    plain = build_loss("asl", targets.numpy(), asl=AslSettings(0.0, 0.0, 0.0))
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(plain(logits, targets), bce * logits.shape[1], atol=1e-6)


def test_a_milder_negative_focus_pushes_a_wrongly_confident_absent_label_down_harder():
    """An absent label at p 0.3: gamma_neg 4 weighs its gradient by p_m^4, gamma_neg 2 by
    p_m^2, so the milder setting corrects it harder; an absent label under the margin
    (p 0.04 < clip 0.05) costs nothing at either."""
    targets = torch.zeros(1, 1)
    grads = {}
    for gamma in (2.0, 4.0):
        loss = build_loss("asl", targets.numpy(), asl=AslSettings(gamma_neg=gamma))
        wrong = torch.logit(torch.full((1, 1), 0.3)).requires_grad_(True)
        (grads[gamma],) = torch.autograd.grad(loss(wrong, targets), wrong)
        sure = torch.logit(torch.full((1, 1), 0.04)).requires_grad_(True)
        (quiet,) = torch.autograd.grad(loss(sure, targets), sure)
        assert quiet.item() == 0
    assert grads[2.0].item() > grads[4.0].item() > 0


def test_a_recipe_sets_the_asymmetric_loss_gammas_and_margin(tmp_path):
    recipe = tmp_path / "mild.toml"
    recipe.write_text('[train]\nloss = "asl"\nasl_gamma_neg = 2\nasl_clip = 0.02\n')
    cfg = make_config(load_recipe(recipe), {})
    assert asl_settings(cfg) == AslSettings(gamma_pos=0.0, gamma_neg=2.0, clip=0.02)
    loss = build_loss(cfg.loss, torch.zeros(1, 1).numpy(), asl=asl_settings(cfg))
    assert (loss.gamma_neg, loss.clip) == (2.0, 0.02)


@pytest.mark.parametrize("settings, message", [
    (AslSettings(gamma_neg=-1.0), "gammas must be 0 or more"),
    (AslSettings(clip=0.6), r"asl_clip must be in \[0, 0.5\)"),
])
def test_impossible_asymmetric_loss_settings_are_refused_with_the_fix(settings, message):
    with pytest.raises(TileLabelError, match=message):
        build_loss("asl", torch.ones(2, 2).numpy(), asl=settings)


def test_the_cli_refuses_asl_settings_for_another_loss_before_writing_anything(tmp_path,
                                                                                run_cli):
    recipe, out = tmp_path / "r.toml", tmp_path / "m"
    recipe.write_text('[train]\nloss = "bce"\nasl_gamma_neg = 2\nepochs = 1\n')
    res = run_cli("train", "--recipe", recipe, "--dataset", UCM, "--out", out)
    assert res.code == 2
    assert "set loss = \"asl\" or leave them out" in res.err and "Traceback" not in res.err
    assert not out.exists()


def test_a_model_card_names_the_asymmetric_loss_settings_it_was_trained_with():
    """A default rebuilt with ASL must say which focus it used, not only "asl"."""
    import copy
    import dataclasses

    from conftest import DEFAULT_MODEL
    from engine.models.modelfile import read_spec
    from engine.train.default_model import model_card

    spec = read_spec(DEFAULT_MODEL)
    training = copy.deepcopy(spec.training)
    training["config"].update(loss="asl", asl_gamma_neg=2.0, asl_gamma_pos=0.0, asl_clip=0.05)
    card = model_card(dataclasses.replace(spec, training=training))
    assert "asl (gamma_neg 2.0, gamma_pos 0.0, margin 0.05)\n  loss;" in card
