"""K-Branch end to end through the CLI: train on real BigEarthNet patches at their native
resolutions, evaluate, and annotate multi-resolution band files with the trained model."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from conftest import DATA

BEN_V1 = DATA / "bigearthnet_v1"
BEN_V2 = f"bigearthnet-v2:{DATA / 'bigearthnet_v2'}"
PATCH = BEN_V1 / "S2A_MSIL2A_20170613T101031_87_48"
L1C_BANDS = DATA / "sentinel2_l1c_bands"
QUICK = ["--arch", "kbranch", "--epochs", "2", "--batch-size", "2", "--lr", "1e-3"]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _last(out: str) -> dict:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]


@pytest.fixture(scope="module")
def kbranch_model(tmp_path_factory):
    from engine.cli import main

    out = tmp_path_factory.mktemp("kbranch") / "model"
    assert main(["train", "--dataset", BEN_V2, "--out", str(out), *QUICK]) == 0
    return out


def test_train_writes_band_groups_at_native_resolution(kbranch_model):
    spec = json.loads((kbranch_model / "model.json").read_text())
    assert spec["arch"] == "kbranch" and spec["tile_px"] == 120 and spec["gsd_m"] == 10.0
    groups = spec["arch_config"]["band_groups"]
    assert [(g["name"], g["px"], len(g["bands"])) for g in groups] == [
        ("10m", 120, 4), ("20m", 60, 6), ("60m", 20, 2)]
    assert spec["bands"] == [b for g in groups for b in g["bands"]]
    assert len(spec["mean"]) == 12 and all(0 < m < 1 for m in spec["mean"])
    history = spec["training"]["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


def test_evaluate_a_kbranch_model(kbranch_model, run_cli, tmp_path):
    report = tmp_path / "report.json"
    res = run_cli("evaluate", "--model", kbranch_model, "--dataset", BEN_V2, "--split", "test",
                  "--report", report)
    assert res.code == 0, res.err
    m = json.loads(report.read_text())
    assert m["n_images"] == 2 and 0 <= m["mAP_macro"] <= 1


def test_trained_kbranch_annotates_a_bigearthnet_patch_folder(kbranch_model, run_cli, tmp_path):
    res = run_cli("annotate", PATCH, "--out", tmp_path / "s.gpkg", "--model", kbranch_model,
                  "--json-progress")
    assert res.code == 0, res.err
    result = _last(res.out)
    assert result["tiles_written"] == 1 and result["attention"]
    with rasterio.open(result["attention"]) as att:
        assert att.count == 19 and 0 <= att.read().min() and att.read().max() <= 1


def test_a_20m_60m_kbranch_trains_and_annotates_band_files_without_10m_bands(run_cli, tmp_path):
    res = run_cli("train", "--dataset", BEN_V2, "--out", tmp_path / "m", *QUICK, "--epochs",
                  "1", "--variant", "20m+60m")
    assert res.code == 0, res.err
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [g["name"] for g in spec["arch_config"]["band_groups"]] == ["20m", "60m"]
    assert len(spec["bands"]) == 8
    res = run_cli("annotate", L1C_BANDS, "--out", tmp_path / "s.gpkg", "--model",
                  tmp_path / "m", "--json-progress")
    assert res.code == 0, res.err
    tiles = gpd.read_file(tmp_path / "s.gpkg", layer="tiles")
    assert len(tiles) == 4 and tiles["edge"].sum() == 3  # 1920 m of data, 1200 m tiles
