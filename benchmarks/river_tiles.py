"""Does a model call the Gorinchem river water? The sample scene, tile by tile.

The sample raster (resources/sample/gorinchem_0.25m_rgb.tif, 0.25 m aerial imagery of a
Dutch river town) is not UC Merced: calm, dark river water beside industry and
gardens. Which of its tiles hold the river was judged by eye once
(resources/sample/gorinchem_0.25m_rgb.river.json). For each model this annotates the
sample and prints p(water) on every tile that is mostly river, how many of those (and of
the partly-river tiles) it labels water at its own thresholds, and on how many dry tiles
it says water.

Target (the accuracy issue): the river tiles labelled water in ``make demo``.

Usage: python benchmarks/river_tiles.py [--tta flips] [MODEL_DIR ...]   (default: the shipped
default)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from annotated_tiles import annotated, models_argument, name

from engine.infer.tta import TTA_VIEWS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "gorinchem_0.25m_rgb.tif"
REFERENCE = SAMPLE.with_suffix(".river.json")
KINDS = ("mostly_river", "partly_river", "dry")


def report(name: str, tiles: dict[tuple[int, int], tuple[float, set[str]]], ref: dict) -> None:
    mostly = [tuple(t) for t in ref["mostly_river"]]
    counts = {k: sum("water" in tiles[tuple(t)][1] for t in ref[k]) for k in KINDS}
    print(f"{name}\n  p(water) on the mostly-river tiles: "
          + " ".join(f"{tiles[t][0]:.2f}" for t in mostly))
    print(f"  labelled water: mostly river {counts['mostly_river']}/{len(mostly)}, partly "
          f"river {counts['partly_river']}/{len(ref['partly_river'])}, dry "
          f"{counts['dry']}/{len(ref['dry'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models_argument(ap)
    ap.add_argument("--tta", default="none", choices=tuple(TTA_VIEWS),
                    help="annotate each tile in several views and average (annotate --tta)")
    args = ap.parse_args()
    ref = json.loads(REFERENCE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(args.models or [None]):
            report(name(model), annotated(SAMPLE, model, Path(tmp) / f"{i}.gpkg", args.tta),
                   ref)


if __name__ == "__main__":
    main()
