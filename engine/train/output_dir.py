"""The folder a training run writes: checked before training starts, replaced atomically
at the end.

A run writes its checkpoint into ``<out>/checkpoint`` while it trains and the finished
model (``model.json`` + ``model.safetensors``) at the end. The finished model is built
in a hidden sibling folder and renamed into place, so a crash never leaves a model
directory whose weights and description disagree. An existing model is replaced only
when the user asks (``--overwrite``), and the model a run fine-tunes from never.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import TileLabelError

CHECKPOINT = "checkpoint"
# what a TileLabel model folder may hold; anything else means the folder is not ours
MODEL_FILES = {"model.json", "model.safetensors", "README.md", CHECKPOINT, "model.onnx",
               "model.onnx.json"}


def check_output_dir(out: Path, init_from: Path | None, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, a run that would write over its parent model, another
    model (without ``overwrite``) or a folder that is not a TileLabel model folder."""
    out = Path(out)
    if init_from is not None and out.exists() and Path(init_from).exists() \
            and os.path.samefile(out, init_from):
        raise TileLabelError(f"--out {out} is the model you fine-tune from (--init-from); "
                             "the new version needs its own folder, e.g. "
                             f"{out.parent / (out.name + '-v2')}")
    if out.exists() and not out.is_dir():
        raise TileLabelError(f"--out {out} is a file; name a new folder for the model")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise TileLabelError(f"nothing to resume: {out} holds no checkpoint; drop "
                                 "--resume to start a new run")
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in MODEL_FILES)
    if foreign:
        raise TileLabelError(f"--out {out} is not a TileLabel model folder (it holds "
                             f"{', '.join(foreign[:3])}); name a new folder for the model")
    if (out / "model.json").exists() and not overwrite:
        raise TileLabelError(f"--out {out} already holds a model; name a new folder, or pass "
                             "--overwrite to replace that model")
    if resume and not (out / CHECKPOINT).is_dir():
        raise TileLabelError(f"nothing to resume: {out} holds no checkpoint; drop --resume")
    if (out / CHECKPOINT).is_dir() and not (resume or overwrite):
        raise TileLabelError(f"--out {out} holds the checkpoint of an unfinished run; pass "
                             "--resume to continue it, or --overwrite to start over")


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to build the finished model in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def publish(staged: Path, out: Path) -> None:
    """Put the model built in ``staged`` at ``out``, keeping the run's checkpoint.

    The old folder is moved aside, the new one renamed in, the old one removed: at every
    moment either the old model or the new one (or, after a crash between the two
    renames, the old one under a hidden name beside it) is complete on disk."""
    out = Path(out)
    try:
        if not out.exists():
            os.replace(staged, out)
            return
        if (out / CHECKPOINT).is_dir():
            os.replace(out / CHECKPOINT, staged / CHECKPOINT)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
