"""Reading a whole small image file (a training chip) as float32 [bands, H, W] in [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.enums import Resampling

from engine.errors import RasterError

# rasterio warns about JPEG/PNG chips without georeferencing; chips need none.
import warnings
from rasterio.errors import NotGeoreferencedWarning


def read_chip(path: Path, size: int | None = None) -> np.ndarray:
    """Read an image chip (GeoTIFF, JPEG, PNG) resampled to ``size`` x ``size``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                shape = (ds.count, size, size) if size else (ds.count, ds.height, ds.width)
                data = ds.read(out_shape=shape, resampling=Resampling.bilinear)
                dtype = ds.dtypes[0]
    except RasterioIOError as exc:
        raise RasterError(f"cannot read image {path}: {exc}") from exc
    return to_unit_range(data, dtype)


def to_unit_range(data: np.ndarray, dtype: str) -> np.ndarray:
    """Scale integer pixels to [0, 1] by their type's range; floats pass through."""
    if dtype == "uint8":
        return data.astype(np.float32) / 255.0
    if dtype == "uint16":
        return data.astype(np.float32) / 65535.0
    return data.astype(np.float32)
