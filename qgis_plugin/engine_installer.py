"""Installing the TileLabel engine from the plugin zip, without a terminal.

The engine runs in its own Python environment (DESIGN.md: the plugin never imports
torch). The installer makes one under the QGIS profile folder
(``<profile>/tilelabel/engine-env``) with a Python that is not QGIS itself, installs
the engine wheel the zip carries (``tilelabel/engine/tilelabel-*.whl``) and its
dependencies from the package index, checks the result by running ``tilelabel models
list`` in it, and stores its interpreter in the settings. Running it again repairs or
upgrades the same environment.

Two parts: ``light`` (annotate, review, export: ONNX Runtime, rasterio, numpy; about
100 MB) and ``full`` (adds PyTorch for Retrain: the CPU build from PyTorch's index unless
an NVIDIA GPU is seen, falling back to the package index's build when that index cannot
be reached).

The tools: ``uv`` when it is on PATH (much faster; ``uv venv --seed`` keeps pip in the
environment for later repairs), with plain ``venv`` + ``pip`` as the fallback of every uv
step; ``venv`` + ``pip`` alone otherwise.

This module holds the plan and the steps (plain subprocesses, no Qt); the QgsTask that
runs them with a live log is :class:`InstallTask` in install_dialog.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PLUGIN_DIR = Path(__file__).resolve().parent
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PARTS = ("light", "full")


def bundled_wheel() -> Path | None:
    """The engine wheel inside the installed plugin (None when run from the repository)."""
    wheels = sorted((PLUGIN_DIR / "engine").glob("tilelabel-*.whl"))
    return wheels[-1] if wheels else None


def _is_python(path: Path) -> bool:
    return path.is_file() and re.match(r"python(3(\.\d+)?)?(\.exe)?$", path.name, re.I) is not None


def base_python() -> str | None:
    """A Python to build the environment with, never the QGIS executable.

    ``TILELABEL_BASE_PYTHON`` wins. Windows (OSGeo4W, the QGIS installer): the python.exe
    that ships with QGIS, beside QGIS's Python prefix. macOS and Linux: QGIS's own
    interpreter when it is a real Python (Linux packages), else python3 on PATH."""
    override = os.environ.get("TILELABEL_BASE_PYTHON")
    if override:
        return override if Path(override).is_file() else None
    prefix = Path(sys.base_prefix)
    if sys.platform == "win32":
        for candidate in (prefix / "python.exe", prefix / "python3.exe"):
            if _is_python(candidate):
                return str(candidate)
        return None
    own = Path(sys.executable)
    if _is_python(own):
        return str(own)
    for candidate in (prefix / "bin" / "python3", Path(shutil.which("python3") or "")):
        if _is_python(candidate):
            return str(candidate)
    return None


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def nvidia_gpu() -> bool:
    """An NVIDIA driver is installed (then PyTorch's CUDA build is worth its size)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


@dataclass
class Step:
    """One command of the installation; when it fails, each ``fallbacks`` entry
    (note, argv) is tried in turn until one succeeds."""

    title: str
    argv: list[str]
    fallbacks: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class InstallPlan:
    base: str
    env: Path
    wheel: Path
    part: str = "light"
    cuda: bool = False
    pip_options: list[str] = field(default_factory=list)  # e.g. --find-links DIR
    uv: str | None = None  # the uv executable, when there is one

    def steps(self) -> list[Step]:
        steps = [self._step("create the environment",
                            lambda uv: [uv, "venv", "--seed", "--allow-existing", "--python",
                                        self.base, str(self.env)],
                            [self.base, "-m", "venv", str(self.env)])]
        if self.part == "full":
            torch = ["torch==2.14.1", "torchvision==0.29.1"]
            if self.cuda:
                steps.append(self._install("PyTorch (CUDA build, for the NVIDIA GPU)", torch))
            else:
                step = self._install("PyTorch (CPU build)", [*torch, "--index-url",
                                                             TORCH_CPU_INDEX])
                note = ("PyTorch's own index cannot be reached: installing the package "
                        "index's build")
                step.fallbacks.append((note, self._pip(torch)))
                steps.append(step)
        target = f"{self.wheel}[train]" if self.part == "full" else str(self.wheel)
        steps.append(self._install("the engine and its dependencies", [target]))
        steps.append(Step("check: tilelabel models list",
                          [str(env_python(self.env)), "-m", "engine.cli", "models", "list"]))
        return steps

    def _pip(self, packages: list[str]) -> list[str]:
        return [str(env_python(self.env)), "-m", "pip", "install", "--upgrade",
                "--disable-pip-version-check", *self.pip_options, *packages]

    def _install(self, title: str, packages: list[str]) -> Step:
        return self._step(title, lambda uv: [uv, "pip", "install", "--python",
                                             str(env_python(self.env)), "--upgrade",
                                             *self.pip_options, *packages],
                          self._pip(packages))

    def _step(self, title: str, with_uv: Callable[[str], list[str]], plain: list[str]) -> Step:
        """``with_uv`` when uv is there (``plain`` as its fallback), else ``plain``."""
        if not self.uv:
            return Step(title, plain)
        return Step(title, with_uv(self.uv), [("uv failed: trying venv and pip", plain)])


def find_uv() -> str | None:
    return shutil.which("uv")


Log = Callable[[str], None]


def explain(output: str, step: Step) -> str:
    """What went wrong, in words an analyst can act on."""
    text = output.lower()
    if "no space left" in text:
        return f"{step.title}: the disk is full; free some space and run Install engine again"
    if any(s in text for s in ("temporary failure in name resolution", "failed to establish",
                               "connection refused", "network is unreachable",
                               "no matching distribution", "could not find a version")):
        return (f"{step.title}: the package index cannot be reached (no network, or a proxy "
                "pip does not know); connect and run Install engine again")
    if "ensurepip" in text or "no module named venv" in text:
        return (f"{step.title}: this Python cannot make environments; on Debian/Ubuntu "
                "install python3-venv (sudo apt install python3-venv) and try again")
    last = [ln for ln in output.strip().splitlines() if ln.strip()]
    return f"{step.title} failed: {last[-1] if last else 'no message'}"


def run_step(argv: list[str], log: Log, cancelled: Callable[[], bool]) -> tuple[int, str]:
    """Run one command, passing its output to ``log`` line by line; (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        log(line.rstrip())
        if cancelled():
            proc.kill()
            break
    return proc.wait(), "".join(lines)


def install(plan: InstallPlan, log: Log, progress: Callable[[float], None] = lambda f: None,
            cancelled: Callable[[], bool] = lambda: False) -> str:
    """Run every step; returns the environment's python. Raises InstallError."""
    steps = plan.steps()
    for i, step in enumerate(steps):
        if cancelled():
            raise InstallError("cancelled")
        log(f"== {step.title}: {' '.join(step.argv)}")
        code, output = run_step(step.argv, log, cancelled)
        for note, argv in step.fallbacks:
            if not code or cancelled():
                break
            log(f"== {note}: {' '.join(argv)}")
            code, output = run_step(argv, log, cancelled)
        if cancelled():
            raise InstallError("cancelled")
        if code:
            raise InstallError(explain(output, step))
        progress(100.0 * (i + 1) / len(steps))
    return str(env_python(plan.env))


class InstallError(Exception):
    """The installation stopped; the message says at which step and what to do."""
