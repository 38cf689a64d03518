"""Weakly labelled training data: box-annotated images (NWPU VHR-10 layout) whose crops
know some labels and not others, and the losses and trainer that skip what is unknown.

The NWPU imagery itself is research-use only and never in the repo: the folder here is
made at test time in NWPU's layout from the project's sample raster (Gorinchem, 0.25 m)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.errors
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from conftest import DATA, SAMPLE, UCM_LABELS
from engine.data.boxes import (NWPU_LABELS, crop_target, image_of, inside_fraction,
                               read_nwpu_boxes)
from engine.data.datasets import open_dataset
from engine.errors import TileLabelError
from engine.train.losses import AsymmetricLoss, build_loss

UCM = f"ucmerced:{DATA / 'ucmerced_mini'}"
# (column, row) of each 400 x 320 px image cut from the sample, and its boxes
IMAGES = {
    "007": ((0, 0), ["(40,40),(90,80),10", "(300,200),(360,260),3"]),
    "012": ((400, 0), ["(100,120),(160,170),2"]),
    "013": ((0, 500), ["(200,100),(250,140),10", "(60,60),(120,110),5", "(10,10),(40,40),8"]),
    "004": ((500, 500), ["(150,150),(230,210),1"]),
    "005": ((300, 300), ["(20,200),(70,260),6"]),
    "006": ((600, 100), ["(320,40),(380,90),10"]),
}


@pytest.fixture(scope="module")
def nwpu_folder(tmp_path_factory):
    """A folder in NWPU VHR-10's layout: images/NNN.jpg and ground_truth/NNN.txt."""
    root = tmp_path_factory.mktemp("nwpu")
    (root / "images").mkdir()
    (root / "ground_truth").mkdir()
    with rasterio.open(SAMPLE) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # plain JPEGs
        for stem, ((col, row), boxes) in IMAGES.items():
            pixels = src.read([1, 2, 3], window=Window(col, row, 400, 320))
            with rasterio.open(root / "images" / f"{stem}.jpg", "w", driver="JPEG", width=400,
                               height=320, count=3, dtype="uint8") as dst:
                dst.write(pixels)
            (root / "ground_truth" / f"{stem}.txt").write_text("\n".join(boxes) + "\n")
    return root


def test_a_crop_knows_its_boxes_labels_and_nothing_it_cannot_see():
    labels = list(NWPU_LABELS)  # airplane, cars, court, ship, tanks
    boxes = [("cars", (10, 10, 30, 30)), ("ship", (240, 10, 300, 40)), ("tanks", (400, 400, 450, 450))]
    target = crop_target(boxes, (0, 0, 256, 256), labels)
    assert target[labels.index("cars")] == 1          # wholly inside
    assert np.isnan(target[labels.index("ship")])     # cut by the edge, 16 of 60 px inside
    assert target[labels.index("tanks")] == 0         # elsewhere in the image: absent here
    assert target[labels.index("airplane")] == 0 and target[labels.index("court")] == 0
    assert inside_fraction((240, 10, 300, 40), (0, 0, 256, 256)) == pytest.approx(16 / 60)


def test_nwpu_boxes_map_to_uc_merced_labels_and_a_bad_line_is_named(tmp_path):
    gt = tmp_path / "001.txt"
    gt.write_text("(1,2),(30,40),10\n(5, 6), (50, 60), 9\n(0,0),(9,9),6\n")
    assert read_nwpu_boxes(gt) == [("cars", (1, 2, 30, 40)), ("court", (0, 0, 9, 9))]  # bridge: none
    gt.write_text("(1,2),(30,40),10\nvehicle at 3,4\n")
    with pytest.raises(TileLabelError, match="line 2"):
        read_nwpu_boxes(gt)


def test_nwpu_crops_are_tiles_split_by_image(nwpu_folder):
    data = open_dataset(f"nwpu-vhr10:{nwpu_folder}")
    assert data.labels == NWPU_LABELS and not data.complete_labels
    sample = data.samples[0]
    bands = data.read(sample)
    assert list(bands) == ["red", "green", "blue"]
    assert all(b.shape == (256, 256) and 0 <= b.min() and b.max() <= 1 for b in bands.values())
    for s in data.samples:  # each crop was made for one of its boxes: that label is present
        assert np.nansum(s.target) >= 1 and image_of(s.name) == s.source.split("/")[-1][:3]
    train, test = data.split("train"), data.split("test")
    assert data.split("val") == []
    assert train and test and len(train) + len(test) == len(data.samples)
    assert not {image_of(s.name) for s in train} & {image_of(s.name) for s in test}


def test_weak_data_aligns_to_the_model_vocabulary_with_unknown_labels(nwpu_folder):
    data = open_dataset(f"nwpu-vhr10:{nwpu_folder}").aligned_to(UCM_LABELS)
    target = data.samples[0].target
    assert data.labels == UCM_LABELS and target.shape == (17,)
    named = [UCM_LABELS.index(l) for l in NWPU_LABELS]
    assert np.isfinite(target[named]).any()
    assert np.isnan(np.delete(target, named)).all()  # e.g. water, trees: not known
    ucm = open_dataset(UCM)
    with pytest.raises(TileLabelError, match="disagree on labels"):
        ucm.aligned_to(NWPU_LABELS)  # a complete dataset is never re-labelled


def test_losses_skip_unknown_labels_and_equal_their_formula_when_all_known():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.randint(0, 2, (4, 5)).float()
    assert torch.allclose(build_loss("bce", targets.numpy())(logits, targets),
                          F.binary_cross_entropy_with_logits(logits, targets))
    weak = targets.clone()
    weak[:, 2:] = float("nan")
    for name in ("bce", "weighted-bce", "imbalance-bce", "asl"):
        loss = build_loss(name, targets.numpy())
        value = loss(logits, weak)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value), name
        assert (grad[:, 2:] == 0).all() and (grad[:, :2] != 0).any(), name
        # the known part alone gives the same loss as the first two labels on their own
        same = build_loss(name, targets[:, :2].numpy())(logits[:, :2], targets[:, :2])
        if name != "imbalance-bce":  # its weights come from all labels' frequencies
            assert torch.allclose(value, same * (1 if name != "asl" else 5 / 2)), name
    asl = AsymmetricLoss()
    p = torch.sigmoid(logits)
    p_m = (p - 0.05).clamp(min=0)
    formula = -(targets * torch.log(p) + (1 - targets) * p_m ** 4 * torch.log(1 - p_m)).sum(1).mean()
    assert torch.allclose(asl(logits, targets), formula, atol=1e-6)


def test_training_on_complete_plus_weak_data_records_the_crops(nwpu_folder, tmp_path, run_cli):
    out = tmp_path / "model"
    res = run_cli("train", "--dataset", UCM, "--dataset", f"nwpu-vhr10:{nwpu_folder}",
                  "--out", out, "--epochs", "1", "--image-size", "64", "--batch-size", "16",
                  "--freeze-backbone")
    assert res.code == 0, res.err
    spec = json.loads((out / "model.json").read_text())
    crops = [n for n in spec["training"]["train_images"] if image_of(n) is not None]
    nwpu_train = open_dataset(f"nwpu-vhr10:{nwpu_folder}").split("train")
    assert sorted(crops) == sorted(s.name for s in nwpu_train)
    assert spec["training"]["n_train"] == 84 + len(nwpu_train)
    assert spec["labels"] == UCM_LABELS
    assert np.isfinite(spec["metrics"]["val"]["mAP_macro"])  # chosen on complete labels


@pytest.mark.parametrize("order, arch, message", [
    ("weak-first", "gap-linear", "cannot come first"),
    ("complete-first", "cmgm", "own losses"),
])
def test_weak_data_is_refused_where_it_would_mislead(nwpu_folder, tmp_path, run_cli, order,
                                                     arch, message):
    weak = f"nwpu-vhr10:{nwpu_folder}"
    datasets = [weak, UCM] if order == "weak-first" else [UCM, weak]
    res = run_cli("train", "--dataset", datasets[0], "--dataset", datasets[1], "--arch", arch,
                  "--out", tmp_path / "m", "--epochs", "1", "--image-size", "64")
    assert res.code == 2 and message in res.err
    assert not (tmp_path / "m").exists()


def test_evaluate_refuses_weakly_labelled_data(nwpu_folder, run_cli):
    from conftest import DEFAULT_MODEL

    res = run_cli("evaluate", "--model", DEFAULT_MODEL, "--dataset",
                  f"nwpu-vhr10:{nwpu_folder}")
    assert res.code == 2 and "labels only some classes" in res.err
