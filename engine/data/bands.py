"""Matching a model's input bands to a raster's bands.

A model names its bands (``red``, ``green``, ``blue``, ``nir`` or Sentinel-2 ``B01``..
``B12``, ``B8A``). A raster band matches by its description, else by its colour
interpretation; an explicit mapping (1-based raster band numbers, in model order) wins
over both. When the raster names none of its bands, bands are taken in order and the
caller logs that assumption.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import RasterError

ALIASES = {
    "red": {"red", "r"},
    "green": {"green", "g"},
    "blue": {"blue", "b"},
    "nir": {"nir", "near infrared", "near-infrared", "nir1"},
}
# Sentinel-2 band names that also stand for a colour band.
S2_COLOUR = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
UNNAMED = {"", "gray", "grey", "undefined", "none"}


def canonical(name: str | None) -> str:
    """Canonical band name: 'Red' -> 'red', 'b4'/'B04' -> 'B04', 'b8a' -> 'B8A'."""
    n = (name or "").strip().lower()
    if re.fullmatch(r"band[ _]?\d+", n):  # GDAL's generic "Band 4": no meaning, unnamed
        return ""
    m = re.fullmatch(r"b(?:and[ _]?)?0*(\d{1,2})(a?)", n)
    if m:
        if m.group(2):  # the red-edge band 8A keeps its one-digit form
            return f"B{int(m.group(1))}A"
        return f"B{int(m.group(1)):02d}"
    for key, names in ALIASES.items():
        if n in names:
            return key
    return n


def is_sentinel2_band(name: str) -> bool:
    return re.fullmatch(r"B(0[1-9]|1[0-2]|8A)", canonical(name)) is not None


@dataclass(frozen=True)
class BandMatch:
    indexes: list[int]  # 1-based raster band numbers, in model band order
    assumed_order: bool  # True when the raster named no bands and order was assumed


def match_bands(model_bands: list[str], descriptions: list[str | None],
                colorinterp: list[str], explicit: list[int] | None = None) -> BandMatch:
    """Raster band numbers feeding each model band, or a RasterError naming the gap."""
    count = len(descriptions)
    if explicit:
        if len(explicit) != len(model_bands):
            raise RasterError(f"--bands gives {len(explicit)} band numbers but the model needs "
                              f"{len(model_bands)} ({', '.join(model_bands)})")
        bad = [b for b in explicit if not 1 <= b <= count]
        if bad:
            raise RasterError(f"--bands names band {bad[0]}, but the raster has bands 1..{count}")
        return BandMatch(list(explicit), False)
    names = [_raster_band_name(d, c) for d, c in zip(descriptions, colorinterp)]
    wanted = [canonical(b) for b in model_bands]
    found, missing = [], []
    for want, original in zip(wanted, model_bands):
        idx = _find(want, names)
        if idx is None:
            missing.append(original)
        found.append(idx)
    if not missing:
        return BandMatch(found, False)
    if all(n in UNNAMED for n in names) and count >= len(model_bands):
        return BandMatch(list(range(1, len(model_bands) + 1)), True)
    have = ", ".join(f"{i + 1}={n or '?'}" for i, n in enumerate(names))
    raise RasterError(
        f"the raster lacks band(s) {', '.join(missing)} that the model needs "
        f"(model bands: {', '.join(model_bands)}; raster bands: {have}). Choose a raster "
        f"with these bands or map them explicitly, e.g. --bands "
        f"{','.join(str(i + 1) for i in range(len(model_bands)))}")


def _raster_band_name(description: str | None, colorinterp: str) -> str:
    if description and canonical(description) not in UNNAMED:
        return canonical(description)
    ci = (colorinterp or "").lower()
    return ci if ci in ("red", "green", "blue") else ("" if ci in UNNAMED else ci)


def _find(want: str, names: list[str]) -> int | None:
    for i, n in enumerate(names):
        if n == want or S2_COLOUR.get(n) == want or S2_COLOUR.get(want) == n:
            return i + 1
    return None
