"""The engine installer (qgis_plugin/engine_installer.py): its plan, its Python, its
messages, and a real light install from the built wheel that then annotates."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE, index_reachable

from qgis_plugin.engine_installer import (TORCH_CPU_INDEX, InstallError, InstallPlan, Step,
                                          base_python, env_python, explain, install)


def _plan(part: str, cuda: bool = False) -> InstallPlan:
    return InstallPlan("/usr/bin/python3", Path("/tmp/env"), Path("/z/tilelabel-0.1.0-py3-none-any.whl"),
                       part, cuda)


def test_the_light_install_takes_no_pytorch():
    argvs = [" ".join(s.argv) for s in _plan("light").steps()]
    assert not any("torch" in a for a in argvs)
    assert argvs[-2].endswith("tilelabel-0.1.0-py3-none-any.whl")
    assert argvs[-1].endswith("-m engine.cli models list")  # the result is checked


def test_the_full_install_takes_the_cpu_build_unless_a_gpu_is_seen():
    cpu = _plan("full").steps()[1]
    assert TORCH_CPU_INDEX in cpu.argv and cpu.fallback and TORCH_CPU_INDEX not in cpu.fallback
    gpu = _plan("full", cuda=True).steps()[1]
    assert "torch==2.14.1" in gpu.argv and TORCH_CPU_INDEX not in gpu.argv
    assert _plan("full").steps()[2].argv[-1].endswith(".whl[train]")


def test_the_environment_is_never_built_with_the_qgis_executable(monkeypatch):
    monkeypatch.delenv("TILELABEL_BASE_PYTHON", raising=False)
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    found = base_python()
    assert found is None or Path(found).name.startswith("python")


@pytest.mark.parametrize("output,says", [
    ("ERROR: Could not find a version that satisfies the requirement rasterio", "cannot be reached"),
    ("OSError: [Errno 28] No space left on device", "disk is full"),
    ("The virtual environment was not created successfully because ensurepip is not available",
     "python3-venv"),
])
def test_a_failed_step_is_explained(output, says):
    assert says in explain(output, Step("the engine", ["pip"]))


def test_a_failing_step_stops_the_install_with_its_reason(tmp_path):
    plan = InstallPlan(sys.executable, tmp_path / "env", tmp_path / "missing.whl")
    log = []
    with pytest.raises(InstallError, match="the engine and its dependencies"):
        install(plan, log.append)
    assert any(line.startswith("== create the environment") for line in log)


@pytest.mark.skipif(not index_reachable(), reason="the package index (pypi.org) is not reachable")
def test_a_light_install_from_the_wheel_annotates_the_sample(tmp_path):
    from scripts.build_plugin import engine_wheel

    wheel = engine_wheel(tmp_path / "dist")
    base = base_python()
    assert base, "no Python to build the environment with"
    env = tmp_path / "engine-env"
    log: list[str] = []
    python = install(InstallPlan(base, env, wheel, "light"), log.append)
    assert python == str(env_python(env))
    out = tmp_path / "s.gpkg"
    done = subprocess.run([python, "-m", "engine.cli", "annotate", str(SAMPLE), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "on onnx (cpu)" in done.stdout and out.exists()
    torch = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert torch.returncode != 0  # the light install really is light
