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


def _plan(part: str, cuda: bool = False, uv: str | None = None) -> InstallPlan:
    return InstallPlan("/usr/bin/python3", Path("/tmp/env"), Path("/z/tilelabel-0.1.0-py3-none-any.whl"),
                       part, cuda, uv=uv)


def test_the_light_install_takes_no_pytorch():
    argvs = [" ".join(s.argv) for s in _plan("light").steps()]
    assert not any("torch" in a for a in argvs)
    assert argvs[-2].endswith("tilelabel-0.1.0-py3-none-any.whl")
    assert argvs[-1].endswith("-m engine.cli models list")  # the result is checked


def test_the_full_install_takes_the_cpu_build_unless_a_gpu_is_seen():
    cpu = _plan("full").steps()[1]
    assert TORCH_CPU_INDEX in cpu.argv and cpu.fallbacks
    assert TORCH_CPU_INDEX not in cpu.fallbacks[-1][1]
    gpu = _plan("full", cuda=True).steps()[1]
    assert "torch==2.14.1" in gpu.argv and TORCH_CPU_INDEX not in gpu.argv
    assert _plan("full").steps()[2].argv[-1].endswith(".whl[train]")


def test_with_uv_every_step_uses_it_and_falls_back_to_venv_and_pip():
    steps = _plan("full", uv="/opt/uv").steps()
    assert steps[0].argv[:2] == ["/opt/uv", "venv"] and "--seed" in steps[0].argv  # pip kept
    assert steps[0].fallbacks[0][1] == ["/usr/bin/python3", "-m", "venv", "/tmp/env"]
    for step in steps[1:-1]:
        assert step.argv[:3] == ["/opt/uv", "pip", "install"]
        assert step.argv[step.argv.index("--python") + 1] == "/tmp/env/bin/python"
        assert step.fallbacks[0][1][1:4] == ["-m", "pip", "install"]
    assert TORCH_CPU_INDEX in steps[1].argv and TORCH_CPU_INDEX not in steps[1].fallbacks[-1][1]
    assert steps[-1].argv[0] == "/tmp/env/bin/python"  # the check runs the engine itself


def test_a_failed_step_tries_its_fallbacks_in_turn(tmp_path):
    marker = tmp_path / "made"
    step = Step("x", [sys.executable, "-c", "raise SystemExit(3)"],
                [("first", [sys.executable, "-c", "raise SystemExit(4)"]),
                 ("second", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"])])
    plan = InstallPlan(sys.executable, tmp_path / "env", tmp_path / "w.whl")
    plan.steps = lambda: [step]
    log: list[str] = []
    install(plan, log.append)
    assert marker.exists() and [l for l in log if l.startswith("== ")][1:] == [
        f"== first: {sys.executable} -c raise SystemExit(4)",
        f"== second: {sys.executable} -c open({str(marker)!r}, 'w')"]


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
