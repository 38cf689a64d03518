"""K-Branch CNN-RNN (Sumbul & Demir 2019): shapes, native-resolution inputs, the
patch-based multi-attention, training, and annotation from multi-resolution band files."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from conftest import DATA
from engine.band_groups import BandGroup, band_groups, input_layout
from engine.data.bigearthnet import S2_BANDS
from engine.data.datasets import open_dataset
from engine.errors import TileLabelError
from engine.models.kbranch import BranchInput, KBranch, KBranchConfig
from engine.models.modelfile import ModelSpec, build_model, save_model
from engine.train.loader import (TrainingView, augment_groups, band_statistics, native_band,
                                 stack_groups)

BEN_V1 = DATA / "bigearthnet_v1"
PATCH = BEN_V1 / "S2A_MSIL2A_20170613T101031_87_48"
L1C_BANDS = DATA / "sentinel2_l1c_bands"  # 20 m and 60 m band files only (no 10 m bands)
TINY = dict(channels=(8, 16, 16, 8), branch_dim=16, descriptor_dim=16, lstm_hidden=16,
            attention_dim=16, attention_rows=4)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny inputs gain nothing from intra-op threads, and on a shared 2-core machine
    two threads waiting on each other at every small op can be 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(n_labels: int = 5, px10: int = 48, **overrides) -> KBranch:
    torch.manual_seed(0)
    groups = [BranchInput("10m", 10.0, 4, px10), BranchInput("20m", 20.0, 6, px10 // 2),
              BranchInput("60m", 60.0, 2, px10 // 6)]
    return KBranch(KBranchConfig(n_labels=n_labels, groups=groups, **{**TINY, **overrides}))


def tiny_batch(b: int = 2, px10: int = 48) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"10m": torch.randn(b, 4, px10, px10, generator=g),
            "20m": torch.randn(b, 6, px10 // 2, px10 // 2, generator=g),
            "60m": torch.randn(b, 2, px10 // 6, px10 // 6, generator=g)}


def save_kbranch(directory, bands, tile_px, labels, mean, std, variant=None):
    """An untrained K-Branch model directory (random weights) laid out as train writes it."""
    model_bands, config = input_layout("kbranch", bands, 10.0, tile_px,
                                       {"variant": variant} if variant else {})
    index = {b: i for i, b in enumerate(bands)}
    spec = ModelSpec(model_id="kbranch-test", arch="kbranch", labels=labels, bands=model_bands,
                     gsd_m=10.0, tile_px=tile_px, mean=[mean[index[b]] for b in model_bands],
                     std=[std[index[b]] for b in model_bands], arch_config=config)
    torch.manual_seed(0)
    return save_model(build_model(spec), spec, directory), spec


@torch.no_grad()
def test_output_and_attention_shapes():
    model = tiny_model(n_labels=5).eval()
    out = model(tiny_batch(b=3))
    assert out.logits.shape == (3, 5)
    assert out.attention.shape == (3, 5, 4, 4)  # R = 16 patches on a 4 x 4 grid
    assert float(out.attention.min()) >= 0 and float(out.attention.max()) <= 1
    peaks = out.attention.flatten(2).amax(dim=2)
    assert not torch.allclose(peaks, torch.ones(3, 5))  # no map is scaled to its own peak
    assert bool((peaks <= torch.sigmoid(out.logits) + 1e-6).all())  # presence-weighted
    assert out.aux["patch_attention"].shape == (3, 4, 16)  # T = 4 rows over R = 16 patches
    nine = tiny_model(patches=9, px10=36)(tiny_batch(b=1, px10=36))
    assert nine.attention.shape == (1, 5, 3, 3)


@torch.no_grad()
def test_multi_attention_rows_are_a_softmax_over_patches():
    model = tiny_model().eval()
    out = model(tiny_batch())
    a, omega = out.aux["patch_attention"], out.aux["descriptors"]
    assert torch.allclose(a.sum(dim=2), torch.ones(2, 4), atol=1e-6)
    assert float(a.min()) > 0
    # Eq. 3: A = softmax(W_a2 tanh(W_a1 Omega)), softmax over the patches, no biases
    expected = torch.softmax(model.w_a2(torch.tanh(model.w_a1(omega))), dim=1).transpose(1, 2)
    assert torch.allclose(a, expected, atol=1e-6)
    assert model.w_a1.bias is None and model.w_a2.bias is None
    # classification from max(0, A Omega^T), vectorised
    psi = torch.relu(a @ omega)
    assert torch.allclose(out.logits, model.classifier(psi.flatten(1)), atol=1e-5)


@torch.no_grad()
def test_label_attention_mixes_the_rows_of_a():
    """Each label's map is a mixture of the T softmax rows, through the fixed curve
    p (1 - exp(-R a)) of engine/models/attention.py."""
    model = tiny_model().eval()
    out = model(tiny_batch())
    a = out.aux["patch_attention"]
    att = out.attention.flatten(2).double()                          # [B, C, R]
    p = torch.sigmoid(out.logits).double()
    r = att.shape[-1]
    for b in range(2):
        for c in range(5):
            mix = -torch.log1p(-att[b, c] / p[b, c]) / r              # the curve inverted
            assert abs(float(mix.sum()) - 1) < 1e-3                 # a distribution again
            mix = mix.float()
            weights = torch.linalg.lstsq(a[b].T, mix[:, None]).solution[:, 0]
            assert torch.allclose(a[b].T @ weights, mix, atol=1e-4)
            assert float(weights.min()) > -1e-4 and abs(float(weights.sum()) - 1) < 1e-3


def test_kbranch_trains_with_decreasing_loss():
    model = tiny_model(n_labels=3).train()
    x = tiny_batch(b=4)
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = F.binary_cross_entropy_with_logits(model(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_bands_are_grouped_by_native_sentinel2_resolution():
    bands, config = input_layout("kbranch", S2_BANDS, 10.0, 120, {"backbone": "efficientnet_lite0"})
    groups = band_groups(config)
    assert [(g.name, g.px, g.bands) for g in groups] == [
        ("10m", 120, ("B02", "B03", "B04", "B08")),
        ("20m", 60, ("B05", "B06", "B07", "B8A", "B11", "B12")),
        ("60m", 20, ("B01", "B09"))]
    assert bands == ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12",
                     "B01", "B09"]
    assert "backbone" not in config  # K-Branch has its own CNNs
    bands, config = input_layout("kbranch", S2_BANDS, 10.0, 120, {"variant": "20m+60m"})
    assert [g.name for g in band_groups(config)] == ["20m", "60m"] and len(bands) == 8
    # every other architecture keeps one stack, untouched
    assert input_layout("gap-linear", S2_BANDS, 10.0, 120, {"backbone": "x"}) == (
        S2_BANDS, {"backbone": "x"})
    with pytest.raises(TileLabelError, match="not a Sentinel-2 band"):
        input_layout("kbranch", ["red", "green", "blue"], 0.3, 256, {})
    with pytest.raises(TileLabelError, match="no 10 m bands"):
        input_layout("kbranch", ["B05", "B01"], 20.0, 60, {"variant": "10m+20m+60m"})
    with pytest.raises(TileLabelError, match="whole number"):
        input_layout("kbranch", S2_BANDS, 10.0, 100, {})


def test_native_bands_are_never_interpolated():
    native = np.arange(36, dtype=np.float32).reshape(6, 6)
    assert torch.equal(native_band(native, "B05", 6), torch.from_numpy(native))
    finer = np.repeat(np.repeat(native, 2, axis=0), 2, axis=1)  # a stack at twice the grid
    assert torch.equal(native_band(finer, "B05", 6), torch.from_numpy(native))
    with pytest.raises(TileLabelError, match="native 6 x 6"):
        native_band(np.zeros((8, 8), np.float32), "B05", 6)


def test_each_branch_receives_its_group_at_native_size_from_real_patches(monkeypatch):
    """BigEarthNet patches (120/60/20 px) reach the 10/20/60 m branches as 16 patches of
    30/15/5 px, with no interpolation or pooling on the way."""
    dataset = open_dataset(f"bigearthnet-v1:{BEN_V1}")
    bands, config = input_layout("kbranch", dataset.bands, dataset.gsd_m, 120, {})
    groups = band_groups(config)

    def refuse(*args, **kwargs):
        raise AssertionError("a band was resampled")

    monkeypatch.setattr(F, "interpolate", refuse)
    monkeypatch.setattr(F, "avg_pool2d", refuse)
    sample = dataset.samples[0]
    mean, std = band_statistics(dataset, dataset.samples, bands, 120, groups)
    view = TrainingView([(dataset, sample)], bands, 120, mean, std, train=False, groups=groups)
    x, _, _ = view[0]
    assert {k: tuple(v.shape) for k, v in x.items()} == {
        "10m": (4, 120, 120), "20m": (6, 60, 60), "60m": (2, 20, 20)}
    with rasterio.open(PATCH / f"{PATCH.name}_B09.tif") as ds:
        raw = ds.read(1).astype(np.float32) / 10000
    b09 = bands.index("B09")
    assert torch.allclose(x["60m"][1], torch.from_numpy((raw - mean[b09]) / std[b09]), atol=1e-5)

    spec = ModelSpec("m", "kbranch", dataset.labels, bands, 10.0, 120, mean, std, config)
    model = build_model(spec).eval()
    seen = {}
    for name, branch in model.branches.items():
        branch.register_forward_pre_hook(
            lambda module, args, name=name: seen.__setitem__(name, tuple(args[0].shape)))
    out = model({k: v[None] for k, v in x.items()})
    assert seen == {"10m": (16, 4, 30, 30), "20m": (16, 6, 15, 15), "60m": (16, 2, 5, 5)}
    assert out.attention.shape == (1, len(dataset.labels), 4, 4)


def test_a_stacked_tensor_is_refused_with_a_clear_message():
    model = tiny_model().eval()
    with pytest.raises(TileLabelError, match="dict of band groups"):
        model(torch.zeros(1, 12, 48, 48))
    bad = tiny_batch()
    bad["60m"] = torch.zeros(2, 2, 16, 16)  # resampled to the 20 m grid
    with pytest.raises(TileLabelError, match=r"group 60m needs \[2, 8, 8\]"):
        model(bad)


def test_band_statistics_are_measured_at_native_size():
    dataset = open_dataset(f"bigearthnet-v1:{BEN_V1}")
    bands, config = input_layout("kbranch", dataset.bands, 10.0, 120, {})
    mean, std = band_statistics(dataset, dataset.samples, bands, 120, band_groups(config))
    b01 = np.stack([dataset.read(s)["B01"] for s in dataset.samples])  # [N, 20, 20]
    i = bands.index("B01")
    assert mean[i] == pytest.approx(float(b01.mean()), rel=1e-5)
    assert std[i] == pytest.approx(float(b01.std(ddof=1)), rel=1e-4)


def test_augmentation_turns_every_group_the_same_way():
    """A 20 m group that is the 10 m group averaged over 2 x 2 blocks stays so."""
    fine = torch.randn(1, 8, 8)
    x = {"10m": fine, "20m": F.avg_pool2d(fine[None], 2)[0]}
    for seed in range(8):
        out = augment_groups(x, torch.Generator().manual_seed(seed))
        assert out["20m"].shape == (1, 4, 4)
        assert torch.allclose(F.avg_pool2d(out["10m"][None], 2)[0], out["20m"], atol=1e-6)


def test_stack_groups_names_a_missing_band():
    with pytest.raises(TileLabelError, match="no band.*B09"):
        stack_groups({"B01": np.zeros((2, 2), np.float32)},
                     [BandGroup("60m", 60.0, 2, ("B01", "B09"))])


def _probabilities(store) -> np.ndarray:
    tiles = gpd.read_file(store, layer="tiles").sort_values("tile_id")
    return tiles[[c for c in tiles.columns if c.startswith("p_")]].to_numpy(float)


def test_annotate_reads_a_bigearthnet_patch_folder_and_a_stacked_raster_alike(tmp_path, run_cli):
    """The same K-Branch model on the patch's band files (10/20/60 m) and on one 10 m
    stack of them: averaging the stack back to each group's grid gives the native pixels,
    hence the same probabilities."""
    dataset = open_dataset(f"bigearthnet-v1:{BEN_V1}")
    mean, std = band_statistics(dataset, dataset.samples, dataset.bands, 120)
    model_dir, _ = save_kbranch(tmp_path / "model", dataset.bands, 120, dataset.labels, mean, std)
    stack = tmp_path / "stack_10m.tif"
    with rasterio.open(PATCH / f"{PATCH.name}_B02.tif") as ref:
        profile = {**ref.profile, "count": len(S2_BANDS), "driver": "GTiff"}
    with rasterio.open(stack, "w", **profile) as out:
        for i, band in enumerate(S2_BANDS, start=1):
            with rasterio.open(PATCH / f"{PATCH.name}_{band}.tif") as ds:
                k = 120 // ds.width
                out.write(np.repeat(np.repeat(ds.read(1), k, axis=0), k, axis=1), i)
            out.set_band_description(i, band)
    folder_run = run_cli("annotate", PATCH, "--out", tmp_path / "folder.gpkg", "--model",
                         model_dir, "--json-progress")
    stack_run = run_cli("annotate", stack, "--out", tmp_path / "stack.gpkg", "--model",
                        model_dir, "--json-progress")
    assert folder_run.code == 0, folder_run.err
    assert stack_run.code == 0, stack_run.err
    p_folder, p_stack = _probabilities(tmp_path / "folder.gpkg"), _probabilities(tmp_path / "stack.gpkg")
    assert p_folder.shape == (1, len(dataset.labels))
    np.testing.assert_allclose(p_folder, p_stack, atol=1e-4)
    with rasterio.open(next((tmp_path / "folder_attention").glob("*.tif"))) as att:
        values = att.read()
        assert att.count == len(dataset.labels) and att.crs.to_epsg() == 32633
        assert att.res[0] % 10 == 0 and att.bounds == rasterio.open(stack).bounds
        assert values.min() >= 0 and values.max() <= 1
        assert att.descriptions[0] == dataset.labels[0]


def test_annotate_reads_band_files_at_20_and_60_m(tmp_path, run_cli):
    """A K-Branch trained on the 20 m and 60 m bands annotates an L1C granule excerpt
    stored as one file per band at native resolution (no 10 m bands, plus an unused
    B10): tiles are cut on the 20 m grid and each group is read from its own files."""
    from engine.infer.annotate import AnnotateOptions, plan_annotation
    from engine.infer.multires import GroupedTileReader
    from engine.progress import Reporter

    labels = ["water", "trees", "crops"]
    model_dir, spec = save_kbranch(tmp_path / "model", S2_BANDS, 48, labels, [0.1] * 12,
                                   [0.05] * 12, variant="20m+60m")
    res = run_cli("annotate", L1C_BANDS, "--out", tmp_path / "s.gpkg", "--model", model_dir,
                  "--json-progress")
    assert res.code == 0, res.err
    tiles = gpd.read_file(tmp_path / "s.gpkg", layer="tiles")
    assert len(tiles) == 16  # 96 px at 20 m = 1920 m; tiles of 48 px x 10 m = 480 m
    assert tiles["raster"].str.endswith("s2_B05.tif").all()  # the finest file is the grid
    with rasterio.open(next((tmp_path / "s_attention").glob("*.tif"))) as att:
        assert att.res == (20.0, 20.0) and att.shape == (96, 96)

    opts = AnnotateOptions(raster=str(L1C_BANDS), store=tmp_path / "x.gpkg", model_dir=model_dir)
    plan = plan_annotation(opts, spec, Reporter())
    reader = GroupedTileReader(plan.info, band_groups(spec.arch_config), plan.sources,
                               spec.bands, spec.mean, spec.std)
    tile = next(iter(plan.grid))
    pixels, valid = reader.read(tile)
    reader.close()
    assert valid == 1.0
    assert {k: v.shape for k, v in pixels.items()} == {"20m": (6, 24, 24), "60m": (2, 8, 8)}
    with rasterio.open(L1C_BANDS / "s2_B09.tif") as ds:  # the 60 m pixels, untouched
        raw = ds.read(1)[:8, :8].astype(np.float32) / 10000
    np.testing.assert_allclose(pixels["60m"][1], (raw - 0.1) / 0.05, atol=1e-4)


def test_annotate_names_the_missing_10m_bands_of_a_folder(tmp_path, run_cli):
    dataset = open_dataset(f"bigearthnet-v1:{BEN_V1}")
    model_dir, _ = save_kbranch(tmp_path / "model", dataset.bands, 120, dataset.labels,
                                [0.1] * 12, [0.05] * 12)
    res = run_cli("annotate", L1C_BANDS, "--out", tmp_path / "s.gpkg", "--model", model_dir)
    assert res.code == 2
    assert "lacks band(s) B02, B03, B04, B08" in res.err and "--variant 20m+60m" in res.err
    assert not (tmp_path / "s.gpkg").exists()


def test_a_single_resolution_model_refuses_a_folder(tmp_path, run_cli, tiny_model_factory):
    model = tiny_model_factory(bands=("B05", "B06", "B07"), gsd_m=20.0, tile_px=32)
    res = run_cli("annotate", L1C_BANDS, "--out", tmp_path / "s.gpkg", "--model", model)
    assert res.code == 2 and "gdalbuildvrt -separate" in res.err


def test_models_list_describes_kbranch_and_its_paper(run_cli):
    res = run_cli("models", "list")
    assert res.code == 0
    line = next(i for i, l in enumerate(res.out.splitlines()) if l.startswith("kbranch "))
    lines = res.out.splitlines()
    assert "Sentinel-2" in lines[line] and "Sumbul & Demir 2019" in lines[line + 1]
