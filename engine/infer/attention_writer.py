"""Per-label attention GeoTIFF, aligned with the annotated raster's pixel grid.

One float32 band per label (band description = label name), values in [0, 1], nodata
-1 where no tile was predicted. An attention pixel is ``factor`` x ``factor`` raster
pixels and attention pixels start on a raster pixel edge, so the raster and its
attention line up exactly. With overlapping tiles each attention pixel is written once,
by the tile whose centre is nearest (each tile owns the middle of its footprint), so the
writer never reads back and memory stays bounded.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from engine.data.raster import RasterInfo
from engine.data.tiling import Tile, TileGrid
from engine.errors import StoreError

ATTENTION_PX_PER_TILE = 32
NODATA = -1.0
# Full-width strips of a few rows: tiles arrive row by row, so only the strips of the
# current tile row are ever partly written and GDAL's cache holds them until complete.
# (256 x 256 blocks would each be flushed half-written and rewritten on wide rasters.)
STRIP_ROWS = 16


def _axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation matrix with half-pixel centres (as torch's and
    GDAL's bilinear with align_corners=False), edges clamped."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    w = np.zeros((n_out, n_in), np.float32)
    w[np.arange(n_out), lo] += 1 - frac
    w[np.arange(n_out), hi] += frac
    return w


def bilinear_resize(planes: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """[C, h, w] -> [C, ny, nx], bilinear (separable: rows, then columns)."""
    c, h, w = planes.shape
    return _axis_weights(h, ny) @ planes @ _axis_weights(w, nx).T


class AttentionWriter:
    def __init__(self, path: Path, info: RasterInfo, grid: TileGrid, labels: list[str],
                 tags: dict[str, str]) -> None:
        self.grid = grid
        self.factor = max(1, round(max(grid.size_x, grid.size_y) / ATTENTION_PX_PER_TILE))
        f = self.factor
        j0, j1 = grid.j_range[0], grid.j_range[-1]
        i0, i1 = grid.i_range[0], grid.i_range[-1]
        self.c0 = (max(0, j0 * grid.stride_x) // f) * f
        self.r0 = (max(0, i0 * grid.stride_y) // f) * f
        c1 = min(info.width, j1 * grid.stride_x + grid.size_x)
        r1 = min(info.height, i1 * grid.stride_y + grid.size_y)
        self.width = max(1, math.ceil((c1 - self.c0) / f))
        self.height = max(1, math.ceil((r1 - self.r0) / f))
        transform = (info.transform @ rasterio.Affine.translation(self.c0, self.r0)
                     @ rasterio.Affine.scale(f))
        self.path = Path(path)
        self.ds = rasterio.open(
            self.path, "w", driver="GTiff", width=self.width, height=self.height,
            count=len(labels), dtype="float32", crs=info.crs, transform=transform,
            nodata=NODATA, tiled=False, blockysize=STRIP_ROWS, compress="deflate",
            predictor=3, BIGTIFF="IF_SAFER")
        for band, label in enumerate(labels, start=1):
            self.ds.set_band_description(band, label)
        self.ds.update_tags(**tags)

    def _owned(self, start: int, size: int, stride: int, index: int, first: int,
               last: int) -> tuple[int, int]:
        """Raster-pixel span of a tile's footprint that this tile owns along one axis."""
        margin = (size - stride) / 2
        lo = start + (0 if index == first else margin)
        hi = start + size - (0 if index == last else margin)
        return round(lo), round(hi)

    def write(self, tile: Tile, attention: np.ndarray) -> None:
        """Write one tile's attention [C, h, w] into the pixels it owns."""
        g, f = self.grid, self.factor
        ox0, ox1 = self._owned(tile.col, g.size_x, g.stride_x, tile.grid_j, g.j_range[0], g.j_range[-1])
        oy0, oy1 = self._owned(tile.row, g.size_y, g.stride_y, tile.grid_i, g.i_range[0], g.i_range[-1])
        ax0, ax1 = (max(0, round((v - self.c0) / f)) for v in (ox0, ox1))
        ay0, ay1 = (max(0, round((v - self.r0) / f)) for v in (oy0, oy1))
        # The last tile of a row or column owns everything up to the raster's edge.
        ax1 = self.width if tile.grid_j == g.j_range[-1] else min(ax1, self.width)
        ay1 = self.height if tile.grid_i == g.i_range[-1] else min(ay1, self.height)
        if ax1 <= ax0 or ay1 <= ay0:
            return
        nx, ny = max(1, round(g.size_x / f)), max(1, round(g.size_y / f))
        up = bilinear_resize(attention.astype(np.float32), ny, nx)
        tx, ty = (tile.col - self.c0) / f, (tile.row - self.r0) / f
        xs = np.clip(np.round(np.arange(ax0, ax1) + 0.5 - tx - 0.5).astype(int), 0, nx - 1)
        ys = np.clip(np.round(np.arange(ay0, ay1) + 0.5 - ty - 0.5).astype(int), 0, ny - 1)
        block = up[:, ys][:, :, xs]
        try:
            self.ds.write(block.astype(np.float32),
                          window=Window(ax0, ay0, ax1 - ax0, ay1 - ay0))
        except (RasterioError, OSError) as exc:
            raise write_failed(self.path, exc) from exc

    def close(self) -> None:
        """Flush and close; then read the file back, so that a write GDAL could not
        complete (a full disk, a vanished folder) fails the run instead of leaving an
        unreadable GeoTIFF named in the summary."""
        if self.ds.closed:
            return
        try:
            self.ds.close()
            with rasterio.open(self.path) as check:
                for band in range(1, check.count + 1):
                    check.checksum(band)
        except (RasterioError, OSError) as exc:
            raise write_failed(self.path, exc) from exc

    def abandon(self) -> None:
        """Close after a failure elsewhere, without checking the file."""
        if not self.ds.closed:
            try:
                self.ds.close()
            except (RasterioError, OSError):
                pass


def write_failed(path: Path, exc: Exception) -> StoreError:
    return StoreError(f"could not write the attention raster {path} ({exc}); the tiles "
                      "already written stay in the store. Free disk space or choose another "
                      "--attention-dir and run again (or pass --no-attention)")
