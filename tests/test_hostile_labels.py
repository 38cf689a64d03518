"""Label names with quotes, commas, unicode and SQL go through every job intact; names
the store's text columns cannot hold (';') are refused at train time with the reason."""
from __future__ import annotations

import shutil

import geopandas as gpd

from conftest import DATA, SAMPLE

HOSTILE = {"airplane": 'plane "jet"', "buildings": "building's, roofs", "cars": "Autos ü 車",
           "trees": "trees'); DROP TABLE tiles;--".replace(";", ""),
           "water": "water' OR '1'='1"}


def _renamed(tmp_path, mapping):
    root = tmp_path / "ucm"
    shutil.copytree(DATA / "ucmerced_mini", root)
    table = root / "LandUse_Multilabeled.txt"
    lines = table.read_text().splitlines()
    header = [mapping.get(name, name) for name in lines[0].split("\t")]
    table.write_text("\n".join(["\t".join(header)] + lines[1:]) + "\n")
    return f"ucmerced:{root}"


def test_a_label_name_with_a_semicolon_is_refused_at_train_time(tmp_path, run_cli):
    data = _renamed(tmp_path, {"water": "water; sea"})
    res = run_cli("train", "--dataset", data, "--out", tmp_path / "m", "--epochs", "1")
    assert res.code == 2 and "'water; sea'" in res.err and "must not" in res.err
    assert not (tmp_path / "m").exists()


def test_hostile_label_names_survive_train_annotate_correct_export_retrain(tmp_path, run_cli):
    from engine.store import AnnotationStore

    data = _renamed(tmp_path, HOSTILE)
    quick = ["--epochs", "1", "--image-size", "128", "--batch-size", "16", "--freeze-backbone"]
    res = run_cli("train", "--dataset", data, "--out", tmp_path / "m", *quick)
    assert res.code == 0, res.err
    store = tmp_path / "s.gpkg"
    res = run_cli("annotate", SAMPLE, "--out", store, "--model", tmp_path / "m",
                  "--no-attention")
    assert res.code == 0, res.err
    with AnnotationStore.open(store) as s:
        assert set(HOSTILE.values()) <= set(s.labels)
        ids = [r[0] for r in s.conn.execute("SELECT tile_id FROM tiles ORDER BY fid")]
    assert run_cli("correct", store, "--tile", ids[0], "--tile", ids[1], "--add",
                   HOSTILE["cars"]).code == 0
    assert run_cli("correct", store, "--tile", ids[1], "--remove", HOSTILE["cars"]).code == 0
    assert run_cli("correct", store, "--tile", ids[2], "--labels",
                   f"{HOSTILE['water']}; {HOSTILE['buildings']}").code == 0
    assert run_cli("correct", store, "--tile", *ids[3:4], "--verify").code == 0
    with AnnotationStore.open(store) as s:
        assert HOSTILE["cars"] in s.tile(ids[0])["final_labels"]
        assert HOSTILE["cars"] not in s.tile(ids[1])["final_labels"]
        assert s.tile(ids[2])["final_labels"] == f"{HOSTILE['buildings']}; {HOSTILE['water']}"
        assert s.tile_count() == len(ids)  # the SQL-like names ran as data, not as SQL

    res = run_cli("export", store, "--out", tmp_path / "e.gpkg")
    assert res.code == 0, res.err
    exported = gpd.read_file(tmp_path / "e.gpkg", layer="labelled_tiles").set_index("tile_id")
    assert exported.loc[ids[2], "labels"] == f"{HOSTILE['buildings']}; {HOSTILE['water']}"
    assert exported.loc[ids[2], "l_water_or_1_1"] == 1

    res = run_cli("train", "--dataset", f"gpkg:{store}", "--init-from", tmp_path / "m",
                  "--out", tmp_path / "m2", "--epochs", "1", "--allow-no-val",
                  "--batch-size", "4")
    assert res.code == 0, res.err
    from engine.data.datasets import open_dataset

    tiles = open_dataset(f"gpkg:{store}", bands=["red", "green", "blue"])
    target = {s.name: s.target for s in tiles.samples}[ids[2]]
    assert {tiles.labels[i] for i in target.nonzero()[0]} == {HOSTILE["buildings"],
                                                                HOSTILE["water"]}
