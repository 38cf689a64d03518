"""Cutting a raster extent into model tiles, in ground units.

A tile covers ``model GSD x tile px`` metres on the ground, i.e. a window of
``S = round(tile ground size / raster ground resolution)`` raster pixels, later
resampled to ``tile_px``. Tiles sit on a grid anchored at the raster's top-left pixel
with a stride of ``S * (1 - overlap)``, so annotating two overlapping extents of the same
raster yields the same tiles (same ids) where they overlap. Every tile that intersects
the requested extent is kept; tiles reaching past the raster's edge are padded and
flagged ``edge``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from engine.data.raster import RasterInfo
from engine.errors import ExtentError, RasterError

MAX_COARSER = 3.0   # refuse rasters whose pixels are > 3x the model's GSD ...
MAX_FINER = 16.0    # ... or < 1/16 of it, unless the user overrides


@dataclass(frozen=True)
class Tile:
    """One tile: its window in raster pixels (may reach past the raster's edges)."""

    col: int
    row: int
    size_x: int
    size_y: int
    grid_i: int
    grid_j: int

    def clipped(self, width: int, height: int) -> Window:
        c0, r0 = max(self.col, 0), max(self.row, 0)
        c1, r1 = min(self.col + self.size_x, width), min(self.row + self.size_y, height)
        return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))

    def is_edge(self, width: int, height: int) -> bool:
        return (self.col < 0 or self.row < 0 or self.col + self.size_x > width
                or self.row + self.size_y > height)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one extent of one raster."""

    size_x: int
    size_y: int
    stride_x: int
    stride_y: int
    i_range: range  # grid rows
    j_range: range  # grid columns

    def __len__(self) -> int:
        return len(self.i_range) * len(self.j_range)

    def __iter__(self) -> Iterator[Tile]:
        return self.tiles_in_rows(self.i_range)

    def tiles_in_rows(self, rows: range) -> Iterator[Tile]:
        """The tiles of grid rows ``rows`` (a slice of ``i_range``), row by row."""
        for i in rows:
            for j in self.j_range:
                yield Tile(j * self.stride_x, i * self.stride_y, self.size_x, self.size_y, i, j)


def check_resolution(info: RasterInfo, model_gsd_m: float, allow_mismatch: bool) -> None:
    """Refuse rasters whose resolution is far from the model's, naming both."""
    res = max(info.ground_resolution_m())
    ratio = res / model_gsd_m
    if allow_mismatch or 1 / MAX_FINER <= ratio <= MAX_COARSER:
        return
    kind = "coarser" if ratio > 1 else "finer"
    raise RasterError(
        f"the raster's resolution ({res:.3g} m/px) is {ratio if ratio > 1 else 1 / ratio:.0f}x "
        f"{kind} than the model's ({model_gsd_m:.3g} m/px): the model would see "
        f"{'blurred, upsampled' if ratio > 1 else 'heavily downsampled'} tiles and its labels "
        "would be meaningless. Use a model trained at this resolution, or pass "
        "--allow-gsd-mismatch to annotate anyway")


def extent_window(info: RasterInfo, extent: tuple[float, float, float, float] | None,
                  extent_crs: str | None) -> Window:
    """The raster pixel window of ``extent`` (whole raster when None), clipped to the raster."""
    if extent is None:
        return Window(0, 0, info.width, info.height)
    minx, miny, maxx, maxy = extent
    if not (maxx > minx and maxy > miny):
        raise ExtentError(f"the extent {minx} {miny} {maxx} {maxy} has zero or negative area; "
                          "give MINX MINY MAXX MAXY with MINX < MAXX and MINY < MAXY")
    if extent_crs:
        try:
            with rasterio.Env():  # GDAL's own error line goes to rasterio's handler, not stderr
                src = CRS.from_user_input(extent_crs)
        except CRSError as exc:
            raise ExtentError(f"unknown CRS '{extent_crs}' for --extent-crs; give a code such "
                              "as EPSG:4326 or EPSG:32633") from exc
        if src != info.crs:
            minx, miny, maxx, maxy = transform_bounds(src, info.crs, minx, miny, maxx, maxy,
                                                      densify_pts=21)
    left, bottom, right, top = info.bounds
    if minx >= right or maxx <= left or miny >= top or maxy <= bottom:
        raise ExtentError(
            f"the extent does not overlap the raster: extent {minx:.6g} {miny:.6g} {maxx:.6g} "
            f"{maxy:.6g}, raster {left:.6g} {bottom:.6g} {right:.6g} {top:.6g} (in the raster's "
            f"CRS {info.crs.to_string()}); check --extent and --extent-crs")
    win = from_bounds(minx, miny, maxx, maxy, transform=info.transform)
    c0, r0 = max(math.floor(win.col_off), 0), max(math.floor(win.row_off), 0)
    c1 = min(math.ceil(win.col_off + win.width), info.width)
    r1 = min(math.ceil(win.row_off + win.height), info.height)
    if c1 <= c0 or r1 <= r0:
        raise ExtentError("the extent covers less than one raster pixel; draw a larger extent")
    return Window(c0, r0, c1 - c0, r1 - r0)


def tile_grid(info: RasterInfo, window: Window, model_gsd_m: float, tile_px: int,
              overlap: float = 0.0) -> TileGrid:
    """Tiles of ``tile_px`` model pixels covering ``window``, on the raster-anchored grid."""
    if not 0.0 <= overlap < 0.9:
        raise ExtentError(f"--overlap must be in [0, 0.9), got {overlap}")
    gx, gy = info.ground_resolution_m()
    ground = model_gsd_m * tile_px
    sx, sy = max(1, round(ground / gx)), max(1, round(ground / gy))
    stx, sty = max(1, round(sx * (1 - overlap))), max(1, round(sy * (1 - overlap)))
    c0, r0 = int(window.col_off), int(window.row_off)
    c1, r1 = c0 + int(window.width), r0 + int(window.height)
    j_range = range(max(0, (c0 - sx) // stx + 1), (c1 - 1) // stx + 1)
    i_range = range(max(0, (r0 - sy) // sty + 1), (r1 - 1) // sty + 1)
    return TileGrid(sx, sy, stx, sty, i_range, j_range)
