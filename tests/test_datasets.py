"""Dataset readers on real samples, label vocabularies and splits."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, UCM_LABELS
from engine.data.datasets import open_dataset
from engine.errors import TileLabelError


def test_ucmerced_reader_reads_jpegs_with_their_label_rows():
    d = open_dataset(f"ucmerced:{DATA / 'ucmerced_mini'}")
    assert d.labels == UCM_LABELS and len(d.samples) == 126
    airplane = next(s for s in d.samples if s.name == "airplane00")
    assert airplane.target[UCM_LABELS.index("airplane")] == 1
    bands = d.read(airplane)
    assert list(bands) == ["red", "green", "blue"] and bands["red"].shape == (128, 128)
    assert 0 <= bands["red"].min() and bands["red"].max() <= 1
    tif = next(s for s in d.samples if s.name == "agricultural00")  # the one GeoTIFF
    assert tif.source.endswith(".tif") and d.read(tif)["green"].shape == (128, 128)


def test_ucmerced_split_is_stratified_deterministic_and_disjoint():
    d = open_dataset(f"ucmerced:{DATA / 'ucmerced_mini'}")
    parts = {n: [s.name for s in d.split(n)] for n in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [84, 21, 21]  # 4/1/1 of each of 21 classes
    assert {n[:-2] for n in parts["val"]} == {n[:-2] for n in parts["train"]}
    assert not set(parts["train"]) & set(parts["val"])
    assert parts == {n: [s.name for s in d.split(n)] for n in parts}


def test_bigearthnet_v1_reads_bands_at_native_resolution_and_maps_to_19_classes():
    d = open_dataset(f"bigearthnet-v1:{DATA / 'bigearthnet_v1'}")
    assert len(d.labels) == 19 and len(d.samples) == 2
    assert any("without" in w for w in d.warnings)  # one unlabelled patch folder is skipped
    s = next(s for s in d.samples if s.name == "S2A_MSIL2A_20170613T101031_87_48")
    assert [d.labels[i] for i in np.flatnonzero(s.target)] == [
        "Arable land",
        "Land principally occupied by agriculture, with significant areas of natural vegetation"]
    bands = d.read(s)
    assert bands["B02"].shape == (120, 120) and bands["B05"].shape == (60, 60)
    assert bands["B01"].shape == (20, 20)
    assert 0 < bands["B04"].mean() < 1


def test_bigearthnet_v2_uses_the_official_split_and_drops_snow_and_cloud():
    d = open_dataset(f"bigearthnet-v2:{DATA / 'bigearthnet_v2'}")
    assert [len(d.split(n)) for n in ("train", "val", "test")] == [2, 2, 2]
    bands = d.read(d.split("val")[0])
    assert set(bands) == {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                          "B09", "B11", "B12"}
    assert bands["B8A"].shape == (60, 60) and bands["B09"].shape == (20, 20)
    assert all(t.sum() >= 1 for t in d.targets(d.samples))


def test_bigearthnet_43_to_19_conversion_is_complete_and_official():
    from engine.data.bigearthnet_labels import LABELS_19, LABELS_43, OLD_TO_NEW, to_19

    assert len(LABELS_43) == 43 and len(LABELS_19) == 19
    assert len(OLD_TO_NEW) == 43 - 11  # eleven classes have no 19-class counterpart
    assert set(OLD_TO_NEW) <= set(LABELS_43)
    assert to_19(["Water courses", "Sea and ocean", "Airports", "Water bodies"]) == [
        "Inland waters", "Marine waters"]


def test_gpkg_dataset_trains_on_corrected_and_verified_tiles_only(tmp_path, run_cli):
    from conftest import SAMPLE
    from engine.store import AnnotationStore

    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", SAMPLE, "--out", store, "--no-attention").code == 0
    with AnnotationStore.open(store) as s:
        ids = [r[0] for r in s.conn.execute("SELECT tile_id FROM tiles ORDER BY fid")]
        s.add_correction(ids[:2], ["water", "ship"])
        s.add_correction(ids[2:3], None, status="verified")
    d = open_dataset(f"gpkg:{store}")
    assert d.labels == UCM_LABELS and len(d.samples) == 3
    assert d.gsd_m == pytest.approx(0.3, rel=0.01)
    water = d.samples[0]
    assert water.target[UCM_LABELS.index("water")] == 1 and water.target.sum() == 2
    assert d.read(water)["red"].shape == (256, 256)


def test_gpkg_dataset_reads_tiles_of_a_raster_whose_path_holds_a_bar(tmp_path, run_cli):
    import shutil

    from conftest import SAMPLE
    from engine.store import AnnotationStore

    raster = tmp_path / "scene|2024.tif"
    shutil.copy(SAMPLE, raster)
    store = tmp_path / "s.gpkg"
    assert run_cli("annotate", raster, "--out", store, "--no-attention").code == 0
    with AnnotationStore.open(store) as s:
        s.add_correction([s.conn.execute("SELECT tile_id FROM tiles").fetchone()[0]], ["water"])
    d = open_dataset(f"gpkg:{store}")
    assert d.read(d.samples[0])["red"].shape == (256, 256)


@pytest.mark.parametrize("spec,message", [
    ("ucmerced", "KIND:PATH"),
    ("lidar:/tmp", "unknown dataset kind"),
    ("ucmerced:/no/such/folder", "dataset path not found"),
])
def test_badly_named_datasets_are_refused(spec, message):
    with pytest.raises(TileLabelError, match=message):
        open_dataset(spec)


def test_a_dataset_path_of_the_wrong_kind_is_refused():
    with pytest.raises(TileLabelError, match="not a UC Merced multi-label folder"):
        open_dataset(f"ucmerced:{DATA / 'bigearthnet_v2'}")
    with pytest.raises(TileLabelError, match="not a BigEarthNet v2"):
        open_dataset(f"bigearthnet-v2:{DATA / 'ucmerced_mini'}")


def test_missing_labels_for_an_image_are_refused(tmp_path):
    import shutil

    root = tmp_path / "ucm"
    shutil.copytree(DATA / "ucmerced_mini", root)
    table = root / "LandUse_Multilabeled.txt"
    lines = table.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:5])
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(TileLabelError, match="has 4 label values, expected 17"):
        open_dataset(f"ucmerced:{root}")
