"""Band groups of multi-resolution models: Sentinel-2 bands by native ground resolution.

A multi-resolution model (K-Branch CNN-RNN) reads each group of bands at the group's own
pixel size instead of one stack resampled to the finest grid. Its model.json says so in
``arch_config["band_groups"]``: a list, finest first, of

    {"name": "20m", "gsd_m": 20.0, "px": 60, "bands": ["B05", "B06", "B07", "B8A", "B11", "B12"]}

where ``px`` is the tile side at the group's resolution (the model's tile covers
``gsd_m * tile_px`` metres; each group covers the same ground with ``px`` pixels). The
model's ``bands`` list is the groups' bands in group order, so ``mean``/``std`` line up.
A model without ``band_groups`` is single-resolution: one stack of ``tile_px`` pixels.

This is model configuration that models, data readers and inference all use, so it lives
beside them at the package root (it imports no reader and no model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.data.bands import canonical
from engine.errors import ModelFileError, TileLabelError

# native resolution of each Sentinel-2 band, metres
S2_RESOLUTION_M = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20,
                   "B07": 20, "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20}

# Architectures whose inputs are band groups at native resolution (see input_layout).
MULTI_RESOLUTION_ARCHS = frozenset({"kbranch"})
S2_GROUP_NAMES = {10: "10m", 20: "20m", 60: "60m"}


@dataclass(frozen=True)
class BandGroup:
    """Bands sharing one ground resolution, read together at ``px`` pixels a tile side."""

    name: str
    gsd_m: float
    px: int
    bands: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "gsd_m": self.gsd_m, "px": self.px, "bands": list(self.bands)}


def parse_resolutions(variant: str | None) -> list[int] | None:
    """``"20m+60m"`` -> [20, 60]; None or empty -> None (every resolution present)."""
    if not variant:
        return None
    out = []
    for part in variant.replace(",", "+").split("+"):
        value = part.strip().lower().removesuffix("m")
        if not value.isdigit() or int(value) not in S2_GROUP_NAMES:
            raise TileLabelError(f"K-Branch variant {variant!r}: name Sentinel-2 resolutions "
                                 "joined by '+', e.g. 10m+20m+60m (all) or 20m+60m (no 10 m bands)")
        out.append(int(value))
    return sorted(set(out))


def sentinel2_groups(bands: list[str], tile_px: int, gsd_m: float,
                     resolutions: list[int] | None = None) -> list[BandGroup]:
    """Group Sentinel-2 ``bands`` by native resolution (finest first), keeping only
    ``resolutions`` when given. Bands without a Sentinel-2 resolution (B10, RGB) are an
    error: K-Branch branches are defined per Sentinel-2 resolution."""
    by_res: dict[int, list[str]] = {}
    for band in bands:
        res = S2_RESOLUTION_M.get(canonical(band))
        if res is None:
            raise TileLabelError(f"band '{band}' is not a Sentinel-2 band of 10, 20 or 60 m "
                                 "(B01-B09, B8A, B11, B12); K-Branch needs Sentinel-2 data such "
                                 "as bigearthnet-v1 or bigearthnet-v2")
        by_res.setdefault(res, []).append(band)
    wanted = resolutions or sorted(by_res)
    missing = [r for r in wanted if r not in by_res]
    if missing:
        raise TileLabelError(f"the data has no {', '.join(f'{r} m' for r in missing)} bands "
                             f"(it has {', '.join(bands)}); choose resolutions it has, e.g. "
                             f"--variant {'+'.join(f'{r}m' for r in sorted(by_res))}")
    return [BandGroup(S2_GROUP_NAMES[r], float(r), group_px(tile_px, gsd_m, float(r)),
                      tuple(by_res[r])) for r in sorted(wanted)]


def group_px(tile_px: int, gsd_m: float, group_gsd_m: float) -> int:
    """Pixels a tile side at ``group_gsd_m``: the tile's ground size over the group's pixel."""
    exact = tile_px * gsd_m / group_gsd_m
    if abs(exact - round(exact)) > 1e-6 or round(exact) < 1:
        raise TileLabelError(f"a tile of {tile_px} px at {gsd_m:g} m is {tile_px * gsd_m:g} m, "
                             f"not a whole number of {group_gsd_m:g} m pixels; use a tile size "
                             f"that is a multiple of {round(group_gsd_m / gsd_m)} px")
    return round(exact)


def band_groups(arch_config: dict[str, Any]) -> list[BandGroup] | None:
    """The band groups a model.json's ``arch_config`` declares, or None (one stack)."""
    raw = arch_config.get("band_groups")
    if raw is None:
        return None
    try:
        groups = [BandGroup(str(g["name"]), float(g["gsd_m"]), int(g["px"]),
                            tuple(str(b) for b in g["bands"])) for g in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"arch_config 'band_groups' is malformed ({exc}); each group "
                             "needs name, gsd_m, px and bands") from exc
    if not groups or any(not g.bands or g.px < 1 for g in groups):
        raise ModelFileError("arch_config 'band_groups' needs at least one group, each with "
                             "bands and a positive px")
    return groups


def check_groups(groups: list[BandGroup], bands: list[str], tile_px: int, gsd_m: float) -> None:
    """The groups must hold exactly the model's bands and match its tile geometry."""
    flat = [b for g in groups for b in g.bands]
    if sorted(flat) != sorted(bands) or len(set(flat)) != len(flat):
        raise ModelFileError(f"arch_config 'band_groups' ({', '.join(flat)}) does not hold "
                             f"exactly the model's bands ({', '.join(bands)})")
    for g in groups:
        if g.px != group_px(tile_px, gsd_m, g.gsd_m):
            raise ModelFileError(f"band group {g.name} has {g.px} px a tile, but a {tile_px} px "
                                 f"tile at {gsd_m:g} m needs {group_px(tile_px, gsd_m, g.gsd_m)}")


def input_layout(arch: str, bands: list[str], gsd_m: float, tile_px: int,
                 arch_config: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(model bands, arch_config) for a new model of ``arch`` trained on ``bands``.

    Single-resolution architectures take the bands as they are. Multi-resolution ones
    (K-Branch) group the Sentinel-2 bands by native resolution; ``arch_config["variant"]``
    may pick resolutions (``20m+60m`` for data without 10 m bands). The model's bands are
    then the groups' bands in group order, and ``band_groups`` is added to arch_config.
    """
    if arch not in MULTI_RESOLUTION_ARCHS:
        return list(bands), dict(arch_config)
    groups = sentinel2_groups(bands, tile_px, gsd_m, parse_resolutions(arch_config.get("variant")))
    config = {k: v for k, v in arch_config.items() if k not in ("backbone", "backbone_weights")}
    config["band_groups"] = [g.to_json() for g in groups]
    return [b for g in groups for b in g.bands], config
