"""Shared fixtures: paths to real test rasters, tiny models, and an in-process CLI runner."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = ROOT / "resources" / "sample" / "gorinchem_0.25m_rgb.tif"
# Its 4 x 4 grid of 76.8 m tiles less the bottom-right corner, which holds 7 % of real
# data (under annotate's minimum share, engine/defaults.py MIN_VALID_FRACTION).
SAMPLE_TILES = 15
DEFAULT_MODEL = ROOT / "engine" / "resources" / "models" / "default"
UCM_LABELS = ["airplane", "bare-soil", "buildings", "cars", "chaparral", "court", "dock",
              "field", "grass", "mobile-home", "pavement", "sand", "sea", "ship", "tanks",
              "trees", "water"]


def index_reachable() -> bool:
    """Whether the package index answers (the installer tests download from it)."""
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``tilelabel ARGS`` in this process; returns exit code, stdout and stderr."""
    from engine.cli import main

    def run(*args: str) -> CliResult:
        previous = signal.getsignal(signal.SIGTERM)
        try:
            code = main([str(a) for a in args])
        finally:
            signal.signal(signal.SIGTERM, previous)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Make small untrained models (random weights) for testing the pipeline's mechanics
    on rasters the default model does not suit (other bands, other resolutions)."""
    import torch

    from engine.models.modelfile import ModelSpec, build_model, save_model

    made: dict[tuple, Path] = {}

    def make(bands=("red", "green", "blue"), gsd_m=0.3, tile_px=64, labels=tuple(UCM_LABELS[:5]),
             model_id="tiny-test-model") -> Path:
        key = (tuple(bands), gsd_m, tile_px, tuple(labels), model_id)
        if key not in made:
            torch.manual_seed(0)
            spec = ModelSpec(model_id=model_id, arch="gap-linear", labels=list(labels),
                             bands=list(bands), gsd_m=gsd_m, tile_px=tile_px,
                             mean=[0.5] * len(bands), std=[0.25] * len(bands),
                             arch_config={"backbone": "efficientnet_lite0"},
                             description="untrained test model (random weights)")
            made[key] = save_model(build_model(spec), spec,
                                   tmp_path_factory.mktemp("model") / "m")
        return made[key]

    return make


@contextmanager
def mounted_tmpfs(folder: Path, size: str):
    """A real tmpfs of ``size`` at ``folder`` (created), unmounted afterwards; skips the
    test where mounting is not allowed (not root). For full or read-only disks."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
