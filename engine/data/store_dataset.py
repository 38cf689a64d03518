"""``gpkg:STORE``: the tiles an analyst corrected or verified in a TileLabel store.

Each tile's final labels (the latest correction) are its target; its pixels are read
from the tile's raster window (the raster path recorded in the store), with the bands
the model needs, resampled to ``default_px`` (the window's size in model pixels is the
model's tile size). Split: a stable hash of the tile id (70/15/15).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from engine.data.bands import match_bands
from engine.data.datasets import MultiLabelDataset, Sample
from engine.data.raster import open_raster, pixel_scaling
from engine.errors import TileLabelError
from engine.store.annotation_store import split_labels

REVIEWED = ("corrected", "verified")


class StoreDataset(MultiLabelDataset):
    kind = "gpkg"

    @classmethod
    def open(cls, path: Path, bands: list[str], tile_px: int | None = None) -> "StoreDataset":
        from engine.store import AnnotationStore

        with AnnotationStore.open(Path(path)) as store:
            labels = store.labels
            rows = store.conn.execute(
                "SELECT tile_id, final_labels, raster, win_col, win_row, win_width, win_height,"
                " gsd_m FROM tiles WHERE status IN (?, ?) ORDER BY fid", REVIEWED).fetchall()
        if not rows:
            raise TileLabelError(f"{path} holds no corrected or verified tiles to train on; "
                                 "correct or verify some tiles first")
        samples = []
        for tid, final, raster, c, r, w, h, _ in rows:
            names = split_labels(final)
            target = np.array([float(l in names) for l in labels], np.float32)
            samples.append(Sample(tid, target, f"{raster}|{c}|{r}|{w}|{h}"))
        px = tile_px or 256
        raster_gsd, window_px = rows[0][7], rows[0][5]
        ds = cls(Path(path), labels, list(bands), raster_gsd * window_px / px, samples, px)
        ds._scalings = {}
        return ds

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        raster, c, r, w, h = sample.source.rsplit("|", 4)  # a path may hold "|"
        if raster not in self._scalings:
            info = open_raster(raster)
            match = match_bands(self.bands, info.descriptions, info.colorinterp)
            self._scalings[raster] = (match.indexes,
                                      pixel_scaling(info, match.indexes, self.bands))
        indexes, scaling = self._scalings[raster]
        px = self.default_px
        with rasterio.open(raster) as ds:
            data = ds.read(indexes, window=Window(int(c), int(r), int(w), int(h)),
                           out_shape=(len(indexes), px, px), boundless=True, fill_value=0,
                           resampling=Resampling.bilinear)
        return dict(zip(self.bands, scaling.apply(data)))
