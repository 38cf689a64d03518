"""Opening a raster for annotation: checks, ground resolution and pixel scaling.

Any GDAL raster works (GeoTIFF/COG, JP2, VRT). :func:`open_raster` reads only metadata
and a few probe blocks, so it is cheap whatever the raster's size, and it turns every
way a file can be unusable into a :class:`RasterError` that says what to do.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from engine.data.bands import is_sentinel2_band
from engine.errors import RasterError

S2_QUANTIFICATION = 10000.0
STRETCH_PERCENTILES = (2.0, 98.0)
STATS_SAMPLE_PX = 1024


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about a raster, read once from its metadata."""

    path: str
    crs: CRS
    transform: rasterio.Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: list[str | None]
    colorinterp: list[str]
    tags: dict[str, str]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]

    def ground_resolution_m(self) -> tuple[float, float]:
        """Pixel size on the ground in metres (x, y), at the raster's centre.

        Geographic CRSs convert degrees at the centre latitude; Web Mercator's nominal
        metres shrink by cos(latitude); feet and other linear units use the CRS factor.
        """
        rx, ry = abs(self.transform.a), abs(self.transform.e)
        if self.crs.is_geographic:
            lat = math.radians(_centre_latitude(self))
            return rx * 111_320.0 * math.cos(lat), ry * 110_540.0
        factor = _linear_unit_factor(self.crs)
        if _is_mercator(self.crs):
            k = math.cos(math.radians(_centre_latitude(self)))
            return rx * factor * k, ry * factor * k
        return rx * factor, ry * factor


def _is_mercator(crs: CRS) -> bool:
    """Plain Mercator (e.g. Web Mercator), whose metres shrink by cos(latitude) on the
    ground; not transverse/oblique Mercator (UTM, national grids), which are true to scale."""
    try:
        return crs.to_dict().get("proj") == "merc"
    except Exception:  # noqa: BLE001 - CRSs without a PROJ string
        return False


def _linear_unit_factor(crs: CRS) -> float:
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - some CRSs have no defined linear unit
        return 1.0


def _centre_latitude(info: RasterInfo) -> float:
    from rasterio.warp import transform as warp_transform

    left, bottom, right, top = info.bounds
    _, ys = warp_transform(info.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    return ys[0]


def open_raster(path: str | Path) -> RasterInfo:
    """Read a raster's metadata and probe a few blocks; RasterError if it is unusable."""
    path = str(path)
    if not path.startswith(("/vsi", "http")) and not Path(path).exists():
        raise RasterError(f"raster not found: {path} (check the path)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                info = RasterInfo(path, ds.crs, ds.transform, ds.width, ds.height, ds.count,
                                  ds.dtypes[0], ds.nodata, list(ds.descriptions),
                                  [c.name for c in ds.colorinterp], dict(ds.tags()))
                _probe_blocks(ds)
    except RasterioError as exc:
        raise RasterError(f"{path} is not a raster GDAL can read ({_first_line(exc)}); "
                          "give a GeoTIFF, JP2, VRT or another GDAL raster") from exc
    if info.crs is None or info.transform.is_identity:
        raise RasterError(f"{path} has no georeferencing (no CRS or geotransform); "
                          "georeference it first (e.g. QGIS Georeferencer or gdal_translate -a_srs)")
    t = info.transform
    if t.b != 0 or t.d != 0:
        angle = math.degrees(math.atan2(t.d, t.a))
        raise RasterError(f"{path} has a rotated geotransform ({angle:.1f} degrees); TileLabel "
                          "cuts north-up tiles only. Warp it to a north-up grid first, e.g. "
                          f"gdalwarp {Path(path).name} {Path(path).stem}_northup.tif")
    return info


def _probe_blocks(ds: rasterio.DatasetReader) -> None:
    """Read one small window at each corner and the centre: catches truncated files early."""
    w, h = min(64, ds.width), min(64, ds.height)
    for col, row in ((0, 0), (ds.width - w, ds.height - h), (ds.width - w, 0),
                     (0, ds.height - h), ((ds.width - w) // 2, (ds.height - h) // 2)):
        try:
            ds.read(1, window=Window(col, row, w, h))
        except RasterioError as exc:
            raise RasterError(f"{ds.name} is damaged or truncated: reading pixels at column "
                              f"{col}, row {row} failed ({_first_line(exc)}). Re-export or "
                              "re-download the file") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass(frozen=True)
class PixelScaling:
    """Per-band linear map from stored values to the [0, 1] range models see:
    ``unit = clip((value - offset) * scale, 0, 1)`` (no clipping for float rasters)."""

    offset: np.ndarray
    scale: np.ndarray
    clip: bool
    method: str

    def apply(self, data: np.ndarray) -> np.ndarray:
        out = (data.astype(np.float32) - self.offset[:, None, None]) * self.scale[:, None, None]
        return np.clip(out, 0.0, 1.0, out=out) if self.clip else out


def pixel_scaling(info: RasterInfo, band_indexes: list[int], model_bands: list[str],
                  s2_offset: float | None = None) -> PixelScaling:
    """How to bring this raster's values to [0, 1] for the model.

    - uint8: value / 255.
    - Sentinel-2 L2A (uint16, model bands named B01..B12): reflectance = (DN + offset)
      / 10000, the offset being -1000 from processing baseline 04.00 on (read from the
      BOA_ADD_OFFSET or PROCESSING_BASELINE tags, or given as ``s2_offset``).
    - other integer types: a per-band 2-98 % percentile stretch measured on a
      decimated read (at most 1024 px a side), as QGIS does for display.
    - floats: used as they are.
    """
    n = len(band_indexes)
    if info.dtype == "uint8":
        return PixelScaling(np.zeros(n, np.float32), np.full(n, 1 / 255.0, np.float32), True, "uint8/255")
    if info.dtype == "uint16" and all(is_sentinel2_band(b) for b in model_bands):
        offset = s2_offset if s2_offset is not None else sentinel2_offset(info.tags)
        return PixelScaling(np.full(n, -offset, np.float32),
                            np.full(n, 1 / S2_QUANTIFICATION, np.float32), False,
                            f"sentinel-2 reflectance (offset {offset:g})")
    if info.dtype.startswith(("uint", "int")):
        lo, hi = _percentiles(info, band_indexes)
        return PixelScaling(lo, 1.0 / np.maximum(hi - lo, 1e-6), True, "percentile stretch 2-98%")
    return PixelScaling(np.zeros(n, np.float32), np.ones(n, np.float32), False, "float as is")


def sentinel2_offset(tags: dict[str, str]) -> float:
    """The L2A radiometric offset: BOA_ADD_OFFSET if tagged, -1000 for baseline >= 04.00."""
    for key, value in tags.items():
        if "BOA_ADD_OFFSET" in key.upper():
            return float(value)
    baseline = next((v for k, v in tags.items() if "PROCESSING_BASELINE" in k.upper()), None)
    try:
        return -1000.0 if baseline is not None and float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def _percentiles(info: RasterInfo, band_indexes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    scale = max(info.width, info.height) / STATS_SAMPLE_PX
    shape = (len(band_indexes), max(1, round(info.height / max(scale, 1))),
             max(1, round(info.width / max(scale, 1))))
    with rasterio.open(info.path) as ds:
        data = ds.read(band_indexes, out_shape=shape, masked=True)
    lo, hi = [], []
    for band in data:
        valid = band.compressed()
        if valid.size == 0:
            lo.append(0.0), hi.append(1.0)
            continue
        p = np.percentile(valid, STRETCH_PERCENTILES)
        lo.append(float(p[0])), hi.append(float(p[1]))
    return np.array(lo, np.float32), np.array(hi, np.float32)
