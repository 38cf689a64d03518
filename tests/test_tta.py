"""Test-time augmentation: each view is really seen, maps come back over their tile, and
with all eight views a turned or mirrored tile gets the same answer as the tile itself."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, DEFAULT_MODEL, SAMPLE

from engine.infer.predictor_base import TilePredictor
from engine.infer.tta import TTA_VIEWS, AugmentedPredictor, from_view, to_view, with_tta
from engine.models.spec import read_spec

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


class CornerProbe(TilePredictor):
    """A fake model: label 0's probability is the tile's top-left pixel; its attention is
    the tile's first band itself (so the true map of a tile is known)."""

    def __call__(self, batch):
        return batch[:, :1, 0, 0].copy(), batch[:, :1].copy()


def _ramp(px: int = 8) -> np.ndarray:
    return np.arange(px * px, dtype=np.float32).reshape(1, 1, px, px) / (px * px)


@pytest.mark.parametrize("view", TTA_VIEWS["dihedral"])
def test_a_view_undone_gives_back_the_tile(view):
    x = _ramp()
    assert np.array_equal(from_view(to_view(x, view), view), x)


def test_the_eight_views_are_eight_different_images():
    seen = {to_view(_ramp(), v).tobytes() for v in TTA_VIEWS["dihedral"]}
    assert len(seen) == 8
    assert len({to_view(_ramp(), v).tobytes() for v in TTA_VIEWS["flips"]}) == 4


def test_views_are_predicted_and_maps_are_turned_back_over_the_tile():
    x = _ramp()
    probe = CornerProbe(read_spec(DEFAULT_MODEL))
    probs, att = AugmentedPredictor(probe, "dihedral")(x)
    corners = [x[0, 0, 0, 0], x[0, 0, 0, -1], x[0, 0, -1, 0], x[0, 0, -1, -1]]
    assert probs[0, 0] == pytest.approx(np.mean(corners))   # each corner seen twice
    np.testing.assert_allclose(att, x, atol=1e-6)           # every map back in place
    assert with_tta(probe, "none") is probe


@pytest.fixture(scope="module")
def default_dihedral():
    from engine.infer.runtime import open_predictor

    return open_predictor(DEFAULT_MODEL, "torch", "cpu", tta="dihedral")


def _ucm_tiles(spec, n: int = 2) -> np.ndarray:
    import torch

    from engine.data.datasets import open_dataset
    from engine.train.loader import TrainingView

    data = open_dataset(UCM)
    picked = [s for s in data.samples if s.name.startswith(("airplane", "harbor"))][:n]
    view = TrainingView([(data, s) for s in picked], spec.bands, spec.tile_px, spec.mean,
                        spec.std, train=False)
    return torch.stack([view[i][0] for i in range(len(view))]).numpy()


@pytest.mark.parametrize("view", [(1, False), (2, True), (3, True)])
def test_with_all_eight_views_a_turned_tile_gets_the_same_labels_and_turned_maps(
        default_dihedral, view):
    x = _ucm_tiles(default_dihedral.spec)
    probs, att = default_dihedral(x)
    probs_v, att_v = default_dihedral(to_view(x, view))
    np.testing.assert_allclose(probs_v, probs, atol=2e-5)
    np.testing.assert_allclose(att_v, to_view(att, view), atol=2e-5)
    assert att.min() >= 0 and att.max() <= 1
    assert "airplane" in default_dihedral.labels_of(probs)[0]


def test_annotate_and_evaluate_take_tta(run_cli, tmp_path):
    import rasterio

    from engine.store import AnnotationStore

    with rasterio.open(SAMPLE) as src:
        left, bottom, _, _ = src.bounds
    store = tmp_path / "a.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--tta", "flips", "--no-attention",
                  "--extent", left, bottom, left + 150, bottom + 75)
    assert res.code == 0, res.err
    with AnnotationStore.open(store) as s:
        params = s.conn.execute("SELECT parameters FROM runs").fetchone()[0]
    assert '"tta": "flips"' in params
    res = run_cli("evaluate", "--model", DEFAULT_MODEL, "--dataset", UCM, "--tta", "flips")
    assert res.code == 0, res.err
    assert "test-time augmentation flips" in res.out
    with pytest.raises(SystemExit) as refused:
        run_cli("annotate", SAMPLE, "--out", tmp_path / "b.gpkg", "--tta", "sideways")
    assert refused.value.code == 2 and not (tmp_path / "b.gpkg").exists()
