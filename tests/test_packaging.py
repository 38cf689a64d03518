"""The engine as an installable package: a wheel built from the repo, installed outside
it, annotates a real raster with the default model it carries as package data."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT, SAMPLE, SAMPLE_TILES


def _wheel(out):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", str(ROOT), "-w", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return next(out.glob("tilelabel-*.whl"))


def test_an_installed_wheel_annotates_from_any_folder_with_its_own_default_model(tmp_path):
    wheel = _wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for name in ("model.safetensors", "model.json", "model.onnx", "model.onnx.json"):
        assert f"engine/resources/models/default/{name}" in names
    assert not any(n.startswith(("tests/", "qgis_plugin/")) for n in names)
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(site), str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    graph = site / "engine/resources/models/default/model.onnx"
    installed_at = graph.stat().st_mtime_ns
    work = tmp_path / "elsewhere"
    work.mkdir()
    raster = shutil.copy(SAMPLE, work / "scene.tif")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "annotate", str(raster), "--out",
                           str(work / "s.gpkg"), "--json-progress"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["event"] == "result" and result["tiles_written"] == SAMPLE_TILES
    assert result["runtime"] == "onnx"  # the packaged graph, trusted as it is
    assert graph.stat().st_mtime_ns == installed_at  # used as shipped, not exported again
    probe = subprocess.run([sys.executable, "-c", "import engine; print(engine.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(site))  # not the repository's copy


def test_the_plugin_zip_carries_a_licence_and_the_engine_wheel(tmp_path):
    from scripts.build_plugin import build

    with zipfile.ZipFile(build(tmp_path / "tilelabel.zip")) as z:
        names = z.namelist()
    assert "tilelabel/LICENSE" in names
    assert any(n.startswith("tilelabel/engine/tilelabel-") and n.endswith(".whl") for n in names)
    assert not any(n.endswith((".pyc", ".so", ".dll")) for n in names)  # plugin-repo rule


def test_the_plugin_zip_passes_the_plugin_repository_checks(tmp_path):
    from scripts.build_plugin import build
    from scripts.check_plugin_zip import MAX_BYTES, check

    archive = build(tmp_path / "tilelabel.zip")
    errors, warnings = check(archive)
    assert errors == []
    assert archive.stat().st_size < MAX_BYTES  # the engine and its default model fit


def _zip(path, members: dict[str, bytes], stored: bool = False):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


GOOD_METADATA = (b"[general]\nname=T\ndescription=d\nversion=1\nqgisMinimumVersion=3.22\n"
                 b"author=A\nemail=a@b.c\nabout=x\ntracker=https://h.io/t\n"
                 b"repository=https://h.io/r\n")


@pytest.mark.parametrize("members,says", [
    ({"t/__init__.py": b"", "t/metadata.txt": GOOD_METADATA}, "t/LICENSE is missing"),
    ({"t/__init__.py": b"", "t/LICENSE": b"MIT", "t/metadata.txt": GOOD_METADATA,
      "t/__pycache__/a.cpython-311.pyc": b""}, "compiled Python files"),
    ({"t/__init__.py": b"", "t/LICENSE": b"MIT", "t/metadata.txt": GOOD_METADATA,
      "u/x.py": b""}, "one top-level folder"),
    ({"t-1/__init__.py": b"", "t-1/LICENSE": b"MIT", "t-1/metadata.txt": GOOD_METADATA},
     "Python identifier"),
    ({"t/__init__.py": b"", "t/LICENSE": b"MIT",
      "t/metadata.txt": GOOD_METADATA.replace(b"tracker=https://h.io/t\n", b"")},
     "required field 'tracker'"),
    ({"t/__init__.py": b"", "t/LICENSE": b"MIT",
      "t/metadata.txt": GOOD_METADATA.replace(b"https://h.io/r", b"http://repo")},
     "repository: 'http://repo' is not a valid URL"),
])
def test_the_repository_checks_refuse_what_the_repository_refuses(tmp_path, members, says):
    from scripts.check_plugin_zip import check

    errors, _ = check(_zip(tmp_path / "p.zip", members))
    assert any(says in e for e in errors), errors


def test_the_repository_checks_refuse_a_zip_over_25_mb(tmp_path):
    from scripts.check_plugin_zip import check

    members = {"t/__init__.py": b"", "t/LICENSE": b"MIT", "t/metadata.txt": GOOD_METADATA,
               "t/big.bin": os.urandom(25_100_000)}
    errors, _ = check(_zip(tmp_path / "p.zip", members, stored=True))
    assert any("over the repository's" in e for e in errors), errors
