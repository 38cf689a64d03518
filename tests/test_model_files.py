"""Model directories: safetensors + model.json, checked on load."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import DEFAULT_MODEL, UCM_LABELS
from engine.errors import ModelFileError
from engine.models.modelfile import load_model, read_spec, store_half


def test_default_model_loads_with_its_labels_bands_and_resolution():
    model, spec = load_model(DEFAULT_MODEL)
    assert spec.labels == UCM_LABELS
    assert spec.bands == ["red", "green", "blue"] and spec.gsd_m == 0.3
    assert len(spec.label_thresholds()) == 17
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.logits.shape == (1, 17) and out.attention.shape == (1, 17, 4, 4)  # stride 16


def test_default_model_card_states_its_validation_accuracy():
    spec = read_spec(DEFAULT_MODEL)
    assert spec.metrics["val"]["OF1"] > 0.5 and spec.metrics["test"]["CF1"] > 0.5
    card = (DEFAULT_MODEL / "README.md").read_text()
    assert f"{spec.metrics['val']['OF1']:.3f}" in card


def test_default_model_card_states_its_figures_beyond_uc_merced_and_with_tta():
    """The issue's model card: NWPU VHR-10 presence recall and precision per label, and the test split
    with test-time augmentation, as measured when the model was built."""
    spec = read_spec(DEFAULT_MODEL)
    card = (DEFAULT_MODEL / "README.md").read_text()
    nwpu = spec.metrics["beyond_ucm"]["NWPU"]
    precision = spec.metrics["beyond_ucm"]["precision"]["NWPU"]
    for label in ("airplane", "tanks", "court", "cars", "ship"):
        p = precision[label]
        row = (f"| NWPU | {label} | {nwpu[label]['crops']} | {nwpu[label]['recall']:.2f} | "
               f"{p['precision']:.2f} ({p['predicted']}) |")
        assert row in card
    flips = spec.metrics["test_tta_flips"]
    assert f"| test_tta_flips | {flips['OF1']:.3f} | {flips['CF1']:.3f} |" in card


def test_the_shipped_model_card_is_the_one_the_builder_writes():
    """The card is written from model.json by engine/train/default_model.py: a limit found
    later goes into the builder and the card is written again, never edited by hand."""
    from engine.train.default_model import model_card

    card = (DEFAULT_MODEL / "README.md").read_text()
    assert card == model_card(read_spec(DEFAULT_MODEL))
    assert "Dark, still water (a pond, a calm river" in card


def test_model_directory_never_holds_a_pickle():
    """Weights (safetensors), description (JSON), the ONNX graph (a protobuf of operators,
    no code) and its sidecar: nothing that can run code when loaded."""
    assert sorted(p.name for p in DEFAULT_MODEL.iterdir()) == [
        "README.md", "model.json", "model.onnx", "model.onnx.json", "model.safetensors"]


def test_the_shipped_onnx_graph_belongs_to_the_shipped_weights():
    from engine.infer.onnx_file import trusted_graph

    found = trusted_graph(DEFAULT_MODEL)
    assert found is not None and found[0].parent == DEFAULT_MODEL


def test_inconsistent_model_json_is_refused(tmp_path, tiny_model_factory):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_factory(), d)
    doc = json.loads((d / "model.json").read_text())
    doc["mean"] = [0.5]  # one value for three bands
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="one value per band"):
        read_spec(d)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, tiny_model_factory):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_factory(), d)
    doc = json.loads((d / "model.json").read_text())
    doc["labels"] = doc["labels"] + ["extra"]  # head now needs 6 outputs, weights have 5
    doc["weights"].pop("sha256")
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="does not fit architecture"):
        load_model(d)


def test_models_list_and_info_commands(run_cli):
    res = run_cli("models", "list")
    assert res.code == 0 and "gap-linear" in res.out
    res = run_cli("models", "info", DEFAULT_MODEL)
    assert res.code == 0 and "17" in res.out and "0.3 m/px" in res.out
    res = run_cli("models", "info", DEFAULT_MODEL, "--json-progress")
    assert json.loads(res.out.splitlines()[-1])["model"]["labels"] == UCM_LABELS


def test_half_precision_storage_halves_the_file_and_loads_a_float32_network(tmp_path,
                                                                           tiny_model_factory):
    import shutil

    from safetensors import safe_open

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_factory(), folder)
    before, _ = load_model(folder)
    size = (folder / "model.safetensors").stat().st_size
    assert store_half(folder) > 0
    assert (folder / "model.safetensors").stat().st_size < 0.55 * size
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["backbone._conv_stem.weight"] == "F16"  # a kernel
    assert dtypes["backbone._bn0.running_var"] == "F32"  # a vector
    after, _ = load_model(folder)  # model.json's checksum follows the rewritten file
    old, new = before.state_dict(), after.state_dict()
    for name, value in new.items():
        assert value.dtype == old[name].dtype  # the network still computes in float32
        if value.is_floating_point():
            assert torch.allclose(value, old[name], rtol=1e-3, atol=1e-4)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(after(x).logits), torch.sigmoid(before(x).logits),
                              atol=2e-3)


def test_the_card_of_a_refitted_default_says_what_it_trained_on_and_who_chose_its_thresholds():
    from dataclasses import replace

    from engine.train.default_model import model_card

    spec = read_spec(DEFAULT_MODEL)
    reference_val = {**spec.metrics["val"], "OF1": 0.891}
    training = {**spec.training, "n_train": 1428, "n_val": 0,
                "refit": {"of": "ref", "fit_on": "train+val", "kept_epoch": 12,
                          "reference_val": reference_val}}
    card = model_card(replace(spec, training=training, metrics={**spec.metrics, "val": {}}))
    assert "trained on the train and validation splits together (1428 images" in card
    assert "stopped after epoch 12 of 12, the epoch its reference run" in card
    assert "calibrated on the validation split by the reference run" in card
    assert "| val (reference run) | 0.891 |" in card
