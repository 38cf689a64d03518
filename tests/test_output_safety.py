"""No command writes over its own input or an existing result unless asked (issue 15)."""
from __future__ import annotations

import hashlib
import shutil

from conftest import DATA, DEFAULT_MODEL

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_training_into_the_model_it_fine_tunes_from_is_refused(tmp_path, run_cli):
    parent = tmp_path / "parent"
    shutil.copytree(DEFAULT_MODEL, parent)
    before = _digest(parent)
    for extra in ([], ["--overwrite"]):
        res = run_cli("train", "--dataset", UCM, "--init-from", parent, "--out", parent,
                      "--epochs", "1", *extra)
        assert res.code == 2 and "the model you fine-tune from" in res.err
    assert _digest(parent) == before


def test_training_into_an_existing_model_needs_overwrite(tmp_path, run_cli):
    existing = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, existing)
    before = _digest(existing)
    res = run_cli("train", "--dataset", UCM, "--out", existing, "--epochs", "1")
    assert res.code == 2 and "already holds a model" in res.err and "--overwrite" in res.err
    assert _digest(existing) == before


def test_training_into_a_folder_that_is_not_a_model_is_refused(tmp_path, run_cli):
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    res = run_cli("train", "--dataset", UCM, "--out", tmp_path, "--epochs", "1", "--overwrite")
    assert res.code == 2 and "not a TileLabel model folder" in res.err
    assert (tmp_path / "holiday.jpg").read_bytes() == b"\xff\xd8"


def test_overwrite_replaces_a_model_whole_and_leaves_no_staging_folder(tmp_path, run_cli):
    out = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL, out)
    res = run_cli("train", "--dataset", UCM, "--out", out, "--epochs", "1", "--overwrite",
                  "--image-size", "64", "--batch-size", "16", "--freeze-backbone")
    assert res.code == 0, res.err
    from engine.models.modelfile import load_model

    _, spec = load_model(out)  # weights and description from the same run (checksum)
    assert spec.tile_px == 64 and not (out / "README.md").exists()  # the old card went too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_smaller_image_size_records_the_ground_resolution_the_model_saw(tmp_path, run_cli):
    res = run_cli("train", "--dataset", UCM, "--out", tmp_path / "m", "--epochs", "1",
                  "--image-size", "64", "--batch-size", "16", "--freeze-backbone")
    assert res.code == 0, res.err
    import json

    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    # UC Merced: 256 px at 0.3 m = 76.8 m a side, seen at 64 px
    assert spec["tile_px"] == 64 and abs(spec["gsd_m"] - 1.2) < 1e-9


def test_evaluate_never_replaces_an_earlier_report_unless_asked(tmp_path, run_cli):
    report = tmp_path / "report.json"
    report.write_text('{"earlier": "figures"}')
    res = run_cli("evaluate", "--model", DEFAULT_MODEL, "--dataset", UCM, "--report", report)
    assert res.code == 2 and "already exists" in res.err and "--overwrite" in res.err
    assert report.read_text() == '{"earlier": "figures"}'
    res = run_cli("evaluate", "--model", DEFAULT_MODEL, "--dataset", UCM, "--report", report,
                  "--overwrite")
    assert res.code == 0, res.err
    assert "mAP_macro" in report.read_text()


def test_graph_never_replaces_an_earlier_graph_unless_asked(tmp_path, run_cli):
    graph = tmp_path / "graph.json"
    graph.write_text("{}")
    res = run_cli("graph", "--dataset", UCM, "--out", graph)
    assert res.code == 2 and "already exists" in res.err
    assert graph.read_text() == "{}"
    assert run_cli("graph", "--dataset", UCM, "--out", graph, "--overwrite").code == 0
    assert "edges" in graph.read_text()
