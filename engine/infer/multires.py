"""Reading tiles for multi-resolution models (K-Branch): each band group at its own grid.

A model with ``band_groups`` sees every group at its native pixel size (10 m bands at
120 px, 20 m at 60 px, 60 m at 20 px for a 1.2 km tile). The bands come from

- one raster holding all of them on one grid (a stacked GeoTIFF or VRT): each group is
  read from the tile's window straight to its own pixel size, with average resampling
  when that means fewer pixels (the group's native grid from the finer stack) and
  bilinear when more;
- a folder of band files at different resolutions (a Sentinel-2 granule's ``*_B05.jp2``
  ..., or ``s2_B05.tif`` ...): each band is read from its own file, so bands stored at
  their native resolution are never resampled. The band is named by the file's band
  description or, failing that, by a ``B05``/``B8A`` token in the file name.

Tiles are cut on the grid of the finest source raster (the reference); every other
source is read over the same ground, so the sources must share the reference's CRS.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window, from_bounds

from engine.band_groups import BandGroup
from engine.data.bands import canonical, is_sentinel2_band, match_bands
from engine.data.raster import PixelScaling, RasterInfo, open_raster, pixel_scaling
from engine.data.tiling import Tile
from engine.errors import RasterError
from engine.infer.tile_reader import TileBatch

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
BAND_TOKEN = re.compile(r"(?:^|[_\-.])(b(?:0?[1-9]|1[0-2]|8a))(?=[_\-.]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class BandSource:
    """Where one model band is read: a raster and a 1-based band number in it."""

    band: str
    info: RasterInfo
    index: int


def _file_band_names(info: RasterInfo) -> list[str]:
    """Canonical band names of a file: descriptions, else a band token in the file name."""
    names = [canonical(d) if d and is_sentinel2_band(d) else "" for d in info.descriptions]
    if info.count == 1 and not names[0]:
        tokens = BAND_TOKEN.findall(Path(info.path).stem)
        names = [canonical(tokens[-1])] if tokens else [""]
    return names


def folder_sources(folder: Path, model_bands: list[str]) -> list[BandSource]:
    """Each model band's file in ``folder``; a RasterError names any band not found."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise RasterError(f"{folder} holds no raster files ({', '.join(RASTER_SUFFIXES)}); "
                          "give a folder of band files such as B05.tif or T32TPT_B05.jp2")
    found: dict[str, BandSource] = {}
    for path in files:
        info = open_raster(path)
        for index, name in enumerate(_file_band_names(info), start=1):
            if not name:
                continue
            if name in found and found[name].info.path != info.path:
                raise RasterError(f"band {name} is in two files of {folder}: "
                                  f"{Path(found[name].info.path).name} and {path.name}; keep one")
            found[name] = BandSource(name, info, index)
    wanted = {canonical(b): b for b in model_bands}
    missing = [b for c, b in wanted.items() if c not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none named"
        raise RasterError(f"the folder {folder} lacks band(s) {', '.join(missing)} that the "
                          f"model needs (bands found: {have}). Add those band files, or use a "
                          "model trained on the bands the folder has (e.g. tilelabel train "
                          "--arch kbranch --variant 20m+60m for a folder without 10 m bands)")
    return [BandSource(b, found[canonical(b)].info, found[canonical(b)].index)
            for b in model_bands]


def stacked_sources(info: RasterInfo, model_bands: list[str],
                    explicit: list[int] | None) -> tuple[list[BandSource], bool]:
    """Each model band's number in one stacked raster (matched as for any model), and
    whether the band order was assumed because the raster names no bands."""
    match = match_bands(model_bands, info.descriptions, info.colorinterp, explicit)
    return [BandSource(b, info, i) for b, i in zip(model_bands, match.indexes)], match.assumed_order


def reference_raster(sources: list[BandSource]) -> RasterInfo:
    """The finest source raster: tiles are cut on its grid. All must share its CRS."""
    ref = min((s.info for s in sources), key=lambda i: max(i.ground_resolution_m()))
    for s in sources:
        if s.info.crs != ref.crs:
            raise RasterError(f"{s.info.path} is in {s.info.crs.to_string()} but "
                              f"{ref.path} is in {ref.crs.to_string()}: band files must share "
                              "one CRS (reproject them first, e.g. gdalwarp -t_srs)")
    return ref


@dataclass(frozen=True)
class _GroupRead:
    """One group's bands that live in one raster: read together in one call."""

    group: str
    info: RasterInfo
    indexes: list[int]
    rows: list[int]          # positions of these bands inside the group
    scaling: PixelScaling


class GroupedTileReader:
    """Tiles as dicts group name -> [n_bands, px_g, px_g] (normalised) + valid fraction.

    Same contract as TileReader (``read``, ``read_batch``, ``close``); pixels outside the
    raster or nodata hold the band's mean (zero after normalisation).
    """

    def __init__(self, ref: RasterInfo, groups: list[BandGroup], sources: list[BandSource],
                 bands: list[str], mean: list[float], std: list[float],
                 s2_offset: float | None = None) -> None:
        self.ref, self.groups = ref, groups
        by_band = {s.band: s for s in sources}
        position = {b: i for i, b in enumerate(bands)}
        self.mean = {g.name: np.asarray([mean[position[b]] for b in g.bands], np.float32)[:, None, None]
                     for g in groups}
        self.std = {g.name: np.asarray([std[position[b]] for b in g.bands], np.float32)[:, None, None]
                    for g in groups}
        self.reads: list[_GroupRead] = []
        for g in groups:
            paths: dict[str, list[int]] = {}
            for row, band in enumerate(g.bands):
                paths.setdefault(by_band[band].info.path, []).append(row)
            for path, rows in paths.items():
                info = by_band[g.bands[rows[0]]].info
                indexes = [by_band[g.bands[r]].index for r in rows]
                names = [g.bands[r] for r in rows]
                self.reads.append(_GroupRead(g.name, info, indexes, rows,
                                             pixel_scaling(info, indexes, names, s2_offset)))
        self._local = threading.local()
        self._opened: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self, path: str) -> rasterio.DatasetReader:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        if path not in handles:
            handles[path] = rasterio.open(path)
            with self._lock:
                self._opened.append(handles[path])
        return handles[path]

    def close(self) -> None:
        with self._lock:
            for ds in self._opened:
                ds.close()
            self._opened.clear()

    def _source_window(self, tile: Tile, info: RasterInfo) -> tuple[int, int, int, int]:
        """The tile's ground footprint in ``info``'s pixels: col, row, width, height."""
        if info.path == self.ref.path:
            return tile.col, tile.row, tile.size_x, tile.size_y
        t = self.ref.transform
        left, top = t @ (tile.col, tile.row)
        right, bottom = t @ (tile.col + tile.size_x, tile.row + tile.size_y)
        win = from_bounds(left, bottom, right, top, transform=info.transform)
        return (round(win.col_off), round(win.row_off), max(1, round(win.width)),
                max(1, round(win.height)))

    def _read_part(self, part: _GroupRead, tile: Tile, px: int, out: np.ndarray,
                   valid: np.ndarray) -> None:
        col, row, size_x, size_y = self._source_window(tile, part.info)
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + size_x, part.info.width), min(row + size_y, part.info.height)
        if c1 <= c0 or r1 <= r0:
            return
        win = Window(c0, r0, c1 - c0, r1 - r0)
        x0, y0 = round((c0 - col) * px / size_x), round((r0 - row) * px / size_y)
        w = max(1, min(px - x0, round(win.width * px / size_x)))
        h = max(1, min(px - y0, round(win.height * px / size_y)))
        fewer = win.width >= w and win.height >= h
        ds = self._dataset(part.info.path)
        try:
            data = ds.read(part.indexes, window=win, out_shape=(len(part.indexes), h, w),
                           resampling=Resampling.average if fewer else Resampling.bilinear)
            mask = ds.read_masks(part.indexes[0], window=win, out_shape=(h, w),
                                 resampling=Resampling.nearest) > 0
        except RasterioError as exc:
            raise RasterError(f"{part.info.path}: reading pixels at column {c0}, row {r0} "
                              f"failed ({exc}); the file may be damaged or truncated") from exc
        mask &= np.isfinite(data).all(axis=0)  # NaN or inf pixels count as nodata
        values = part.scaling.apply(data)
        for k, r in enumerate(part.rows):
            region = out[r, y0:y0 + h, x0:x0 + w]
            region[mask] = values[k][mask]
        valid[y0:y0 + h, x0:x0 + w] |= mask

    def read(self, tile: Tile) -> tuple[dict[str, np.ndarray], float]:
        """One tile: group name -> normalised [n_bands, px_g, px_g], and the share of the
        finest group's pixels holding real data."""
        pixels, fraction = {}, 0.0
        for i, g in enumerate(self.groups):
            unit = np.broadcast_to(self.mean[g.name], (len(g.bands), g.px, g.px)).copy()
            valid = np.zeros((g.px, g.px), bool)
            for part in self.reads:
                if part.group == g.name:
                    self._read_part(part, tile, g.px, unit, valid)
            pixels[g.name] = (unit - self.mean[g.name]) / self.std[g.name]
            fraction = float(valid.mean()) if i == 0 else fraction
        return pixels, fraction

    def read_batch(self, tiles: list[Tile]) -> TileBatch:
        pixels, fractions = zip(*(self.read(t) for t in tiles))
        stacked = {g.name: np.stack([p[g.name] for p in pixels]) for g in self.groups}
        return TileBatch(list(tiles), stacked, np.asarray(fractions, np.float32))
