"""Reading model-ready tiles from a raster, in parallel threads.

Each worker thread has its own rasterio dataset (GDAL handles are not thread-safe).
A tile's window is clipped to the raster, read with bilinear resampling straight to the
model's pixel size (GDAL uses overviews when it can), scaled to [0, 1], normalised, and
pasted into a tile whose padding and nodata pixels (NaN included) hold the model's mean (zero after
normalisation), so they pull predictions nowhere.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError

from engine.data.raster import PixelScaling, RasterInfo
from engine.data.tiling import Tile
from engine.errors import RasterError


@dataclass
class TileBatch:
    tiles: list[Tile]
    # [B, bands, tile_px, tile_px] float32, normalised; for multi-resolution models a dict
    # group name -> [B, n_bands, px_g, px_g] (engine/infer/multires.py)
    pixels: np.ndarray | dict[str, np.ndarray]
    valid_fraction: np.ndarray  # [B] share of the tile holding real (not nodata/pad) data

    def take(self, rows: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """The pixels of the tiles at ``rows`` (either layout)."""
        if isinstance(self.pixels, dict):
            return {k: v[rows] for k, v in self.pixels.items()}
        return self.pixels[rows]


class TileReader:
    def __init__(self, info: RasterInfo, band_indexes: list[int], scaling: PixelScaling,
                 mean: list[float], std: list[float], tile_px: int) -> None:
        self.info = info
        self.bands = band_indexes
        self.scaling = scaling
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.tile_px = tile_px
        self._local = threading.local()
        self._opened: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = rasterio.open(self.info.path)
            self._local.ds = ds
            with self._lock:
                self._opened.append(ds)
        return ds

    def _all_valid(self, ds: rasterio.DatasetReader) -> bool:
        """No nodata value, mask band or alpha on the bands read: every pixel is data."""
        flags = ds.mask_flag_enums
        return all(flags[b - 1] == [MaskFlags.all_valid] for b in self.bands)

    def close(self) -> None:
        with self._lock:
            for ds in self._opened:
                ds.close()
            self._opened.clear()

    def read(self, tile: Tile) -> tuple[np.ndarray, float]:
        """One normalised tile [bands, tile_px, tile_px] and its valid-data fraction."""
        n, px = len(self.bands), self.tile_px
        unit = np.broadcast_to(self.mean, (n, px, px)).copy()  # [0,1] units, mean = neutral
        valid = np.zeros((px, px), bool)
        win = tile.clipped(self.info.width, self.info.height)
        if win.width > 0 and win.height > 0:
            x0 = round((win.col_off - tile.col) * px / tile.size_x)
            y0 = round((win.row_off - tile.row) * px / tile.size_y)
            w = max(1, min(px - x0, round(win.width * px / tile.size_x)))
            h = max(1, min(px - y0, round(win.height * px / tile.size_y)))
            ds = self._dataset()
            try:
                data = ds.read(self.bands, window=win, out_shape=(n, h, w),
                               resampling=Resampling.bilinear)
                mask = (np.ones((h, w), bool) if self._all_valid(ds) else
                        ds.read_masks(self.bands[0], window=win, out_shape=(h, w),
                                      resampling=Resampling.nearest) > 0)
            except RasterioError as exc:
                raise RasterError(f"{self.info.path}: reading pixels at column {win.col_off},"
                                  f" row {win.row_off} failed ({exc}); the file may be damaged"
                                  " or truncated") from exc
            mask &= np.isfinite(data).all(axis=0)  # NaN or inf pixels count as nodata
            part = self.scaling.apply(data)
            region = unit[:, y0:y0 + h, x0:x0 + w]
            if mask.all():
                region[...] = part
            else:
                region[:, mask] = part[:, mask]
            valid[y0:y0 + h, x0:x0 + w] = mask
        return (unit - self.mean) / self.std, float(valid.mean())

    def read_batch(self, tiles: list[Tile]) -> TileBatch:
        pixels, fractions = zip(*(self.read(t) for t in tiles))
        return TileBatch(list(tiles), np.stack(pixels), np.asarray(fractions, np.float32))


def batched(items: Iterable[Tile], size: int) -> Iterator[list[Tile]]:
    chunk: list[Tile] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


READER_NICENESS = 19


def _lower_thread_priority() -> None:
    """Run this reader thread at the lowest CPU priority (Linux; a no-op elsewhere).

    On a CPU-bound machine the model's intra-op threads wait for each other at every
    layer, so a reader that pre-empts one of them stalls them all; at low priority the
    reader takes the CPU the model leaves (measured in benchmarks/annotate_speed.py).
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICENESS)
    except (AttributeError, OSError):
        pass


def prefetched_batches(reader: TileReader, tiles: Iterable[Tile], batch_size: int,
                       workers: int, depth: int) -> Iterator[TileBatch]:
    """Batches in order, read ``depth`` batches ahead by ``workers`` threads.

    At most ``depth`` batches are in memory at once, whatever the raster's size.
    """
    pending: deque[Future[TileBatch]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-reader",
                            initializer=_lower_thread_priority) as pool:
        try:
            for chunk in batched(tiles, batch_size):
                pending.append(pool.submit(reader.read_batch, chunk))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
