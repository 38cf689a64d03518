"""The mosaic augmentation: four training tiles at half their side in one, labelled with
the union of their labels, so every label it names is still in the picture."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.data.datasets import MultiLabelDataset, Sample
from engine.errors import TileLabelError
from engine.train.loader import (Augmentation, TrainingView, augment, mosaic, stack_bands,
                                 union_of_targets)

PX = 32
N_LABELS = 6


class OneColourPerLabel(MultiLabelDataset):
    """Six tiles; tile k holds label k only and is filled with the value (k + 1) / 10 in
    every band, so the values in a tile say which labels it shows."""

    kind = "colours"

    def __init__(self) -> None:
        samples = [Sample(f"tile{k}", np.eye(N_LABELS, dtype=np.float32)[k], f"tile{k}")
                   for k in range(N_LABELS)]
        super().__init__("colours", [f"label{k}" for k in range(N_LABELS)],
                         ["red", "green", "blue"], 0.3, samples, PX)

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        value = (int(sample.name[4:]) + 1) / 10
        return {b: np.full((PX, PX), value, np.float32) for b in self.bands}


def view(how: Augmentation, seed: int = 0) -> TrainingView:
    ds = OneColourPerLabel()
    return TrainingView([(ds, s) for s in ds.samples], ds.bands, PX, [0.0] * 3, [1.0] * 3,
                        train=True, seed=seed, augmentation=how)


def labels_seen(x: torch.Tensor) -> set[int]:
    """The labels whose colour fills at least a quarter's worth of pixels less a margin."""
    values = torch.round(x[0] * 10).long() - 1
    counts = torch.bincount(values.flatten(), minlength=N_LABELS)
    return {k for k in range(N_LABELS) if counts[k] >= 0.2 * x[0].numel()}


def test_a_mosaic_names_exactly_the_labels_its_four_quarters_show():
    tiles = view(Augmentation(scale=(1.0, 1.0), mosaic=1.0))
    for i in range(len(tiles)):
        x, target, index = tiles[i]
        assert index == i and x.shape == (3, PX, PX)
        present = {int(k) for k in torch.nonzero(target == 1)}
        assert present == labels_seen(x)
        assert i in present  # the item itself is one of the four
        assert ((target == 0) | (target == 1)).all()


def test_quarters_go_to_their_corners_at_half_the_side():
    quarters = [torch.full((2, 16, 16), v) for v in (0.1, 0.2, 0.3, 0.4)]
    x = mosaic(quarters)
    assert x.shape == (2, 16, 16)
    assert torch.allclose(x[:, :8, :8], torch.tensor(0.1))
    assert torch.allclose(x[:, :8, 8:], torch.tensor(0.2))
    assert torch.allclose(x[:, 8:, :8], torch.tensor(0.3))
    assert torch.allclose(x[:, 8:, 8:], torch.tensor(0.4))


def test_an_odd_tile_side_is_kept():
    x = mosaic([torch.rand(1, 15, 15) for _ in range(4)])
    assert x.shape == (1, 15, 15)


def test_the_union_is_present_if_any_quarter_shows_it_and_unknown_only_without_that():
    nan = math.nan
    targets = torch.tensor([[1, 0, 0, nan],
                            [0, 0, nan, nan],
                            [nan, 0, 0, 0],
                            [0, 0, 0, 1]], dtype=torch.float32)
    union = union_of_targets(targets)
    assert union[0] == 1 and union[3] == 1   # present somewhere, unknown elsewhere
    assert union[1] == 0                     # known absent in all four
    assert torch.isnan(union[2])             # absent in three, not known in one


def test_the_share_of_mosaics_follows_the_recipe():
    tiles = view(Augmentation(scale=(1.0, 1.0), mosaic=0.5))
    mosaics = 0
    for epoch in range(20):
        tiles.epoch = epoch
        mosaics += sum(tiles[i][1].sum() > 1 for i in range(len(tiles)))
    assert 35 <= mosaics <= 85  # 120 draws at one half (a repeat of a tile makes fewer labels)


def test_without_a_mosaic_the_random_stream_is_what_it_was():
    """Runs without a mosaic pair by seed with runs trained before it existed."""
    how = Augmentation(scale=(0.5, 2.0), brightness=0.2, contrast=0.2)
    tiles = view(how, seed=3)
    ds, sample = tiles.items[2]
    g = torch.Generator().manual_seed(3 * 1_000_003 + 0 * 10_007 + 2)
    expected = augment(stack_bands(ds.read(sample), ds.bands, PX), g, how)
    assert torch.equal(tiles[2][0], expected)


def test_a_quarter_zooms_in_only_and_holds_no_mosaic():
    quarter = Augmentation(scale=(0.5, 2.0), mosaic=0.3).for_quarter()
    assert quarter.scale == (0.5, 1.0) and quarter.mosaic == 0.0


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_0_to_1_is_refused(share):
    with pytest.raises(TileLabelError, match="mosaic"):
        Augmentation(mosaic=share)


def test_a_recipe_sets_the_mosaic(tmp_path):
    from engine.train.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\narch = "gap-linear"\n[augment]\nmosaic = 0.25\n')
    assert load_recipe(recipe)["augment"].mosaic == 0.25
