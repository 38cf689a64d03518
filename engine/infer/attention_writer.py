"""Per-label attention GeoTIFF, aligned with the annotated raster's pixel grid.

One float32 band per label (band description = label name), values in [0, 1], nodata
-1 where no tile was predicted. An attention pixel is ``factor`` x ``factor`` raster
pixels and attention pixels start on a raster pixel edge, so the raster and its
attention line up exactly. With overlapping tiles each attention pixel is written once,
by the tile whose centre is nearest (each tile owns the middle of its footprint), so the
writer never reads back and memory stays bounded.

Values are stored to the nearest 1/4096 (``STEP``: far finer than a colour ramp shows)
and compressed with ZSTD level 1 and the floating-point predictor: float32 maps at full
precision hardly compress (34 MB for 17 labels over 729 tiles), rounded they take a
quarter of that, and ZSTD 1 encodes them 5 x faster than DEFLATE 6 (profiled on the
729-tile run of benchmarks/annotate_speed.py, docs/benchmarks.md: the encoding was the
largest cost of annotate besides the model). Every GDAL that QGIS ships (2.3 and later)
reads ZSTD.

Each band carries GDAL statistics (``BandSums``) whose minimum and maximum are the
attention scale, 0 and 1, and whose mean and standard deviation are the band's own: a
viewer then stretches every label's band over the same range instead of over that
band's values (which would make a dim map look as bright as a strong one), and nothing
computes statistics of a constant band (an absent label, 0 everywhere), which GDAL
reports as "dfMax should be strictly greater than dfMin".

On a Dask cluster each block of tile rows is written by its worker as one piece on the
same pixel grid (``AttentionFrame``), and ``write_attention_vrt`` joins the pieces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

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
STEP = 1 / 4096


@lru_cache(maxsize=16)
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


@dataclass(frozen=True)
class AttentionFrame:
    """The attention raster's pixel grid over a tile grid: one attention pixel is
    ``factor`` x ``factor`` raster pixels, the first at raster pixel (``c0``, ``r0``);
    ``width`` x ``height`` attention pixels in all."""

    grid: TileGrid
    factor: int
    c0: int
    r0: int
    width: int
    height: int
    transform: rasterio.Affine
    crs: object

    @classmethod
    def of(cls, info: RasterInfo, grid: TileGrid) -> AttentionFrame:
        f = max(1, round(max(grid.size_x, grid.size_y) / ATTENTION_PX_PER_TILE))
        j0, j1 = grid.j_range[0], grid.j_range[-1]
        i0, i1 = grid.i_range[0], grid.i_range[-1]
        c0 = (max(0, j0 * grid.stride_x) // f) * f
        r0 = (max(0, i0 * grid.stride_y) // f) * f
        c1 = min(info.width, j1 * grid.stride_x + grid.size_x)
        r1 = min(info.height, i1 * grid.stride_y + grid.size_y)
        transform = (info.transform @ rasterio.Affine.translation(c0, r0)
                     @ rasterio.Affine.scale(f))
        return cls(grid, f, c0, r0, max(1, math.ceil((c1 - c0) / f)),
                   max(1, math.ceil((r1 - r0) / f)), transform, info.crs)

    def owned_cols(self, grid_j: int) -> tuple[int, int]:
        """Attention columns [a, b) owned by the tiles of grid column ``grid_j``."""
        g = self.grid
        return self._owned(grid_j * g.stride_x, g.size_x, g.stride_x, grid_j, g.j_range,
                           self.c0, self.width)

    def owned_rows(self, grid_i: int) -> tuple[int, int]:
        """Attention rows [a, b) owned by the tiles of grid row ``grid_i``."""
        g = self.grid
        return self._owned(grid_i * g.stride_y, g.size_y, g.stride_y, grid_i, g.i_range,
                           self.r0, self.height)

    def piece_span(self, rows: range | None) -> tuple[int, int]:
        """First attention row and number of rows of the piece owned by grid ``rows``
        (None: the whole raster)."""
        if rows is None:
            return 0, self.height
        top, bottom = self.owned_rows(rows[0])[0], self.owned_rows(rows[-1])[1]
        return top, max(1, bottom - top)

    def _owned(self, start: int, size: int, stride: int, index: int, indexes: range,
               origin: int, extent: int) -> tuple[int, int]:
        # each tile owns the middle of its footprint; the first and last own to the edges
        margin = (size - stride) / 2
        lo = round(start + (0 if index == indexes[0] else margin))
        hi = round(start + size - (0 if index == indexes[-1] else margin))
        a = max(0, round((lo - origin) / self.factor))
        b = extent if index == indexes[-1] else min(round((hi - origin) / self.factor), extent)
        return a, b


@dataclass
class BandSums:
    """Running sums of one band's written pixels, for its GDAL statistics."""
    count: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, values: np.ndarray) -> None:
        self.count += values.size
        self.total += float(values.sum(dtype=np.float64))
        self.squares += float(np.square(values, dtype=np.float64).sum())

    def merge(self, other: BandSums) -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    def tags(self, pixels: int) -> dict[str, str]:
        """The band's statistics: minimum and maximum the attention contract's one scale
        (engine/models/output.py), mean and standard deviation its own pixels'."""
        mean = self.total / self.count if self.count else 0.0
        var = max(0.0, self.squares / self.count - mean * mean) if self.count else 0.0
        return {"STATISTICS_MINIMUM": "0", "STATISTICS_MAXIMUM": "1",
                "STATISTICS_MEAN": f"{mean:.6g}", "STATISTICS_STDDEV": f"{math.sqrt(var):.6g}",
                "STATISTICS_VALID_PERCENT": f"{100.0 * self.count / max(1, pixels):.6g}"}

    @classmethod
    def of_tags(cls, tags: dict[str, str], pixels: int) -> BandSums:
        """The sums behind ``tags`` (a piece's statistics, written by ``tags``)."""
        count = float(tags.get("STATISTICS_VALID_PERCENT", 0)) / 100.0 * pixels
        mean, std = float(tags.get("STATISTICS_MEAN", 0)), float(tags.get("STATISTICS_STDDEV", 0))
        return cls(count, mean * count, (std * std + mean * mean) * count)


class AttentionWriter:
    """Writes the attention of a tile grid's tiles into a GeoTIFF on ``frame``; with
    ``rows`` (grid rows), only the attention rows those tiles own: one piece of the
    raster, which a VRT puts together with the other pieces (engine/infer/cluster.py)."""

    def __init__(self, path: Path, frame: AttentionFrame, labels: list[str],
                 tags: dict[str, str], rows: range | None = None) -> None:
        self.frame = frame
        self.top, self.height = frame.piece_span(rows)
        self.path = Path(path)
        self.ds = rasterio.open(
            self.path, "w", driver="GTiff", width=frame.width, height=self.height,
            count=len(labels), dtype="float32", crs=frame.crs,
            transform=frame.transform @ rasterio.Affine.translation(0, self.top),
            nodata=NODATA, tiled=False, blockysize=STRIP_ROWS, compress="zstd",
            zstd_level=1, predictor=3, BIGTIFF="IF_SAFER")
        for band, label in enumerate(labels, start=1):
            self.ds.set_band_description(band, label)
        self.ds.update_tags(**tags)
        self.sums = [BandSums() for _ in labels]

    def write(self, tile: Tile, attention: np.ndarray) -> None:
        """Write one tile's attention [C, h, w] into the pixels it owns."""
        fr = self.frame
        f, g = fr.factor, fr.grid
        ax0, ax1 = fr.owned_cols(tile.grid_j)
        ay0, ay1 = (v - self.top for v in fr.owned_rows(tile.grid_i))
        ay0, ay1 = max(0, ay0), min(ay1, self.height)
        if ax1 <= ax0 or ay1 <= ay0:
            return
        nx, ny = max(1, round(g.size_x / f)), max(1, round(g.size_y / f))
        up = bilinear_resize(attention.astype(np.float32), ny, nx)
        tx, ty = (tile.col - fr.c0) / f, (tile.row - fr.r0) / f - self.top
        xs = np.clip(np.round(np.arange(ax0, ax1) - tx).astype(int), 0, nx - 1)
        ys = np.clip(np.round(np.arange(ay0, ay1) - ty).astype(int), 0, ny - 1)
        block = np.round(up[:, ys][:, :, xs] / STEP) * STEP
        for sums, band in zip(self.sums, block):
            sums.add(band)
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
            for band, sums in enumerate(self.sums, start=1):  # after the pixels: a write clears them
                self.ds.update_tags(band, **sums.tags(self.ds.width * self.height))
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


def write_attention_vrt(path: Path, frame: AttentionFrame, labels: list[str],
                        tags: dict[str, str], pieces: list[tuple[range, str]]) -> None:
    """A VRT joining the attention ``pieces`` (grid rows, GDAL path) of one raster into
    one raster on ``frame``: what the store names and QGIS opens. Rows no piece covers
    (blocks without data) read as nodata."""
    t, wkt = frame.transform, frame.crs.to_wkt()
    piece_tags = [_band_tags(source) for _, source in pieces]
    bands = []
    for band, label in enumerate(labels, start=1):
        sources, sums = [], BandSums()
        for (rows, source), tags_of_band in zip(pieces, piece_tags):
            top, height = frame.piece_span(rows)
            sums.merge(BandSums.of_tags(tags_of_band[band - 1], frame.width * height))
            sources.append(
                f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{escape(source)}"
                f"</SourceFilename><SourceBand>{band}</SourceBand>"
                f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{frame.width}\" ySize=\"{height}\"/>"
                f"<DstRect xOff=\"0\" yOff=\"{top}\" xSize=\"{frame.width}\" "
                f"ySize=\"{height}\"/></SimpleSource>")
        bands.append(f"<VRTRasterBand dataType=\"Float32\" band=\"{band}\">"
                     f"<Description>{escape(label)}</Description>"
                     f"<Metadata>{_mdi(sums.tags(frame.width * frame.height))}</Metadata>"
                     f"<NoDataValue>{NODATA}</NoDataValue>{''.join(sources)}</VRTRasterBand>")
    meta = _mdi(tags)
    Path(path).write_text(
        f"<VRTDataset rasterXSize=\"{frame.width}\" rasterYSize=\"{frame.height}\">"
        f"<SRS>{escape(wkt)}</SRS><GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}"
        f"</GeoTransform><Metadata>{meta}</Metadata>{''.join(bands)}</VRTDataset>\n")


def _band_tags(source: str) -> list[dict[str, str]]:
    """Each band's tags (its statistics) of the piece ``source``."""
    with rasterio.open(source) as ds:
        return [ds.tags(band) for band in range(1, ds.count + 1)]


def _mdi(tags: dict[str, str]) -> str:
    return "".join(f"<MDI key=\"{escape(k)}\">{escape(v)}</MDI>" for k, v in tags.items())


def write_failed(path: Path, exc: Exception) -> StoreError:
    return StoreError(f"could not write the attention raster {path} ({exc}); the tiles "
                      "already written stay in the store. Free disk space or choose another "
                      "--attention-dir and run again (or pass --no-attention)")
