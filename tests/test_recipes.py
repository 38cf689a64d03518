"""Training recipes (recipes/*.toml): data, not flags; typos are refused, flags win."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


def _recipe(tmp_path, text: str):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_a_recipe_trains_and_a_flag_given_wins_over_it(run_cli, tmp_path):
    recipe = _recipe(tmp_path, """
[train]
epochs = 1
image_px = 64
batch_size = 8
lr = 2e-3
warmup_epochs = 0.5
freeze_backbone = true
[arch_config]
dropout = 0.1
[augment]
scale = [0.6, 1.5]
brightness = 0.1
""")
    out = tmp_path / "m"
    res = run_cli("train", "--recipe", recipe, "--dataset", UCM, "--out", out, "--lr", "5e-3")
    assert res.code == 0, res.err
    config = json.loads((out / "model.json").read_text())["training"]["config"]
    assert config["lr"] == 5e-3                      # the flag
    assert config["warmup_epochs"] == 0.5 and config["image_px"] == 64  # the recipe
    assert config["augment"] == {"scale": [0.6, 1.5], "brightness": 0.1, "contrast": 0.0,
                                 "colour": 0.0, "blur": 0.0, "mosaic": 0.0}
    assert json.loads((out / "model.json").read_text())["arch_config"]["dropout"] == 0.1


@pytest.mark.parametrize("text,named", [
    ("[train]\nepochz = 3\n", "epochz"),
    ("[train]\nepochs = 'three'\n", "'epochs'"),
    ("[augment]\nscale = [0.05, 1.0]\n", "scale"),
    ("[trainer]\nepochs = 3\n", "trainer"),
    ("[train\n", "not a valid TOML"),
    ("[train]\narch = 'ms-cma'\n[arch_config]\nabsent_atention = 0.1\n", "absent_atention"),
    ("[arch_config]\nvariant = 'agcn'\n", "no option variant"),  # gap-linear has none
])
def test_a_recipe_with_a_typo_is_refused_by_name(run_cli, tmp_path, text, named):
    out = tmp_path / "m"
    res = run_cli("train", "--recipe", _recipe(tmp_path, text), "--dataset", UCM, "--out", out)
    assert res.code == 2 and named in res.err and "Traceback" not in res.err
    assert not out.exists()


def test_the_repository_recipes_load():
    from engine.models.registry import check_arch_config
    from engine.train.recipe import load_recipe, make_config

    for path in sorted((ROOT / "recipes").glob("*.toml")):
        cfg = make_config(load_recipe(path), {})
        assert cfg.epochs >= 1 and cfg.arch
        check_arch_config(cfg.arch, cfg.arch_config)  # every option is one the model reads


def test_cmgm_options_are_the_fields_of_its_config():
    from dataclasses import fields

    from engine.models.cmgm import CMGMConfig
    from engine.models.registry import ARCHITECTURES

    given = {"n_labels", "in_bands", "pretrained", "label_embeddings", "label_graph", "backbone"}
    assert set(ARCHITECTURES["cmgm"].options) == {f.name for f in fields(CMGMConfig)} - given


def test_warm_up_ramps_the_learning_rate_per_step():
    from engine.train.trainer import TrainConfig, warmup_factor

    cfg = TrainConfig(warmup_epochs=1.0)
    factors = [warmup_factor(cfg, step, 4) for step in range(6)]
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(TrainConfig(), 0, 4) == 1.0


@pytest.mark.parametrize("zoom", [1.5, 2.0, 3.0, 4.0])
def test_zoom_out_keeps_every_object_and_the_tile_size(zoom):
    from engine.train.loader import Augmentation, augment

    x = torch.zeros(3, 64, 64)
    x[:, 28:36, 28:36] = 1.0  # one bright object in the middle
    how = Augmentation(scale=(zoom, zoom))
    for seed in range(10):
        y = augment(x, torch.Generator().manual_seed(seed), how)
        assert y.shape == x.shape
        assert y.max() > 0.5  # still there, smaller (and mirrored copies at the edges)
        # smaller: the mirrored copies together cover no more than the object did, roughly
        assert (y > 0.5).sum() <= (x > 0.5).sum() * 2


def test_brightness_and_contrast_change_values_not_band_ratios():
    from engine.train.loader import Augmentation, augment

    x = torch.rand(3, 32, 32) * 0.5 + 0.25
    y = augment(x, torch.Generator().manual_seed(3), Augmentation(scale=(1.0, 1.0),
                                                                  brightness=0.3))
    # a dihedral turn, then one factor for every band and pixel
    ratios = [y.sum() / torch.rot90(x, k, (1, 2)).sum() for k in range(4)]
    assert any(abs(float(r) - 1.0) > 0.01 for r in ratios)
    assert np.isclose(float((y / y.sum()).std()), float((x / x.sum()).std()), rtol=1e-4)


def test_colour_jitter_gives_each_band_its_own_gain():
    from engine.train.loader import Augmentation, augment

    x = torch.full((3, 16, 16), 0.5)
    y = augment(x, torch.Generator().manual_seed(1), Augmentation(scale=(1.0, 1.0), colour=0.2))
    gains = y.mean(dim=(1, 2)) / 0.5
    assert ((gains >= 0.8) & (gains <= 1.2)).all()
    assert gains.max() - gains.min() > 0.01  # not one factor for all bands
    assert torch.allclose(y.std(dim=(1, 2)), torch.zeros(3), atol=1e-6)  # no spatial change


def test_blur_softens_edges_keeps_the_mean_and_comes_on_half_the_tiles():
    from engine.train.loader import Augmentation, augment

    x = torch.zeros(1, 32, 32)
    x[:, :, ::2] = 1.0  # one-pixel stripes: sun glint, fine texture
    how = Augmentation(scale=(1.0, 1.0), blur=2.0)
    blurred = 0
    for seed in range(40):
        y = augment(x, torch.Generator().manual_seed(seed), how)
        assert y.shape == x.shape and abs(float(y.mean()) - 0.5) < 0.02
        blurred += bool(y.std() < 0.4)  # the stripes' std is 0.5
    assert 10 <= blurred <= 30


def test_augmentation_strengths_out_of_range_are_refused():
    from engine.errors import TileLabelError
    from engine.train.loader import Augmentation

    with pytest.raises(TileLabelError, match="colour"):
        Augmentation(colour=1.5)
    with pytest.raises(TileLabelError, match="blur"):
        Augmentation(blur=-1)
