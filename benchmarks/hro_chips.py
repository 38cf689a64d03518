"""What does a model say on US orthoimagery it never saw? The USGS HRO chips, by eye.

../shared/data/aerial-hro holds USGS High Resolution Orthoimagery chips (public domain;
about 0.15 m on the ground: New York streets, suburbs, a park, a golf course with a pond,
parking lots). Each 512 px chip is one whole 76.8 m tile and edge slivers, which annotate
skips. Which labels the whole tile clearly holds, and which it clearly does not, was
judged once by eye (benchmarks/hro_chips.json). For each model this annotates every chip
as an analyst would and prints, per chip, the labels it misses and the labels it says
wrongly, then recall over the present labels and false alarms over the absent ones.

Usage: python benchmarks/hro_chips.py [MODEL_DIR ...]   (default: the shipped default)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from annotated_tiles import annotated, models_argument, name

ROOT = Path(__file__).resolve().parents[1]
CHIPS = ROOT.parent / "shared" / "data" / "aerial-hro"
REFERENCE = Path(__file__).with_suffix(".json")


def whole_tile_labels(model: Path | None, chip: Path, store: Path) -> set[str]:
    """The labels annotate gives the chip's whole tile (window origin 0, 0)."""
    return annotated(chip, model, store)[(0, 0)][1]


def report(name: str, said: dict[str, set[str]], chips: dict) -> None:
    found = present = false = absent = 0
    print(name)
    for chip, ref in chips.items():
        missed = sorted(set(ref["present"]) - said[chip])
        wrong = sorted(said[chip] & set(ref["absent"]))
        found += len(ref["present"]) - len(missed)
        present += len(ref["present"])
        false += len(wrong)
        absent += len(ref["absent"])
        if missed or wrong:
            print(f"  {chip:16s} missed: {', '.join(missed) or '-':28s} "
                  f"said wrongly: {', '.join(wrong) or '-'}")
    print(f"  recall {found}/{present} = {found / present:.2f}, "
          f"false alarms {false}/{absent} = {false / absent:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models_argument(ap)
    args = ap.parse_args()
    chips = json.loads(REFERENCE.read_text())["chips"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(args.models or [None]):
            said = {chip: whole_tile_labels(model, CHIPS / f"{chip}.tif",
                                            Path(tmp) / f"{i}-{chip}.gpkg") for chip in chips}
            report(name(model), said, chips)


if __name__ == "__main__":
    main()
