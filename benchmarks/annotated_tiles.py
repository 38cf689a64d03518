"""Annotate a raster with a model as an analyst would, and read back what each tile got.

The benchmarks that check models against references judged by eye (river_tiles.py,
hro_chips.py) run ``tilelabel annotate`` itself, in a child process, so that what they
score is what the plugin would show.
"""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def annotated(raster: Path, model: Path | None, store: Path, tta: str = "none"
              ) -> dict[tuple[int, int], tuple[float, set[str]]]:
    """(window col, window row) -> (p_water, labels) of each tile of ``raster``, annotated
    without attention by ``model`` (None: the shipped default) into ``store``, with
    annotate's test-time augmentation ``tta``."""
    cmd = [sys.executable, "-m", "engine.cli", "annotate", str(raster), "--out", str(store),
           "--no-attention", "--tta", tta] + (["--model", str(model)] if model else [])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"annotate failed on {raster.name} with {name(model)}:\n{done.stderr}")
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT win_col, win_row, p_water, labels FROM tiles").fetchall()
    return {(c, r): (p, set(filter(None, (labels or "").split("; "))))
            for c, r, p, labels in rows}


def models_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("models", nargs="*", type=Path, help="model directories (default: the "
                    "shipped default model)")


def name(model: Path | None) -> str:
    return str(model) if model else "the default model"
