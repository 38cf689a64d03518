"""What ``tilelabel annotate RASTER [RASTER ...]`` reads: rasters named one by one, or
through a folder, a glob, a text file of paths, or a STAC ItemCollection.

- a folder: the rasters in it (``*.tif``, ``*.tiff``, ``*.vrt``, ``*.jp2``, ``*.img``),
  sorted by name; a Sentinel-2 band folder (files named by band, B01 ... B12, B8A) stays
  one raster (a multi-resolution model reads it; the others say how to stack it);
- a glob (``tiles/*.tif``), sorted;
- a ``.txt`` file: one path per line (relative to the file's folder; ``#`` comments);
- a STAC ItemCollection (``.json`` / ``.geojson``): each item's ``visual`` asset, else its
  one GeoTIFF asset; hrefs relative to the file's folder.
The same raster named twice is annotated once.
"""
from __future__ import annotations

import glob
import json
import re
from pathlib import Path

from engine.errors import RasterError

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img"}
GLOB_CHARS = set("*?[")
BAND_FILE = re.compile(r"(^|[_.-])B(0[1-9]|1[0-2]|8A)($|[_.-])", re.IGNORECASE)


def expand_inputs(items: list[str], band_folders: bool) -> list[str]:
    """The rasters ``items`` name, in order, each once. ``band_folders``: a folder is a
    multi-resolution band folder (one raster), not a folder of rasters."""
    rasters: list[str] = []
    for item in items:
        rasters += _expand(item, band_folders)
    return list(dict.fromkeys(rasters))


def _expand(item: str, band_folders: bool) -> list[str]:
    path = Path(item)
    if item.startswith("/vsi"):
        return [item]
    if GLOB_CHARS & set(item) and not path.exists():
        found = sorted(glob.glob(item))
        if not found:
            raise RasterError(f"no file matches {item}; check the pattern")
        return found
    if path.is_dir() and not band_folders and not _is_gdal_dataset(path):
        found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        if len([f for f in found if BAND_FILE.search(Path(f).stem)]) >= 2:
            return [item]  # one scene's band files, not a folder of scenes
        if not found:
            raise RasterError(f"{item} is a folder without rasters "
                              f"({', '.join(sorted(RASTER_SUFFIXES))}); name the rasters")
        return found
    if path.suffix.lower() == ".txt" and path.is_file():
        return _list_file(path)
    if path.suffix.lower() in (".json", ".geojson") and path.is_file():
        return _stac_items(path)
    return [item]


def _is_gdal_dataset(folder: Path) -> bool:
    """A folder GDAL opens as one raster (an ArcInfo grid, a band folder it recognises)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(folder):
            return True
    except RasterioIOError:
        return False


def _list_file(path: Path) -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    rasters = [str(_beside(path, ln)) for ln in lines if ln]
    if not rasters:
        raise RasterError(f"{path} lists no rasters (one path per line)")
    return rasters


def _beside(listing: Path, name: str) -> Path | str:
    if name.startswith(("/vsi", "http://", "https://")):
        return name
    p = Path(name)
    return p if p.is_absolute() else listing.parent / p


def _stac_items(path: Path) -> list[str]:
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise RasterError(f"{path} is not JSON ({exc}); give a STAC ItemCollection") from exc
    features = doc.get("features") if isinstance(doc, dict) else None
    if doc.get("type") != "FeatureCollection" or not isinstance(features, list):
        raise RasterError(f"{path} is not a STAC ItemCollection (a FeatureCollection of "
                          "items with assets)")
    rasters = []
    for item in features:
        href = _item_raster(item)
        if href is None:
            raise RasterError(f"{path}: item {item.get('id', '?')} has no 'visual' asset and "
                              "not exactly one GeoTIFF asset; say which to annotate by "
                              "listing the files in a .txt file")
        rasters.append(str(_beside(path, href)))
    return rasters


def _item_raster(item: dict) -> str | None:
    assets = item.get("assets") or {}
    if "visual" in assets:
        return assets["visual"].get("href")
    tiffs = [a.get("href") for a in assets.values() if "tiff" in str(a.get("type", "")).lower()
             or str(a.get("href", "")).lower().endswith((".tif", ".tiff"))]
    return tiffs[0] if len(tiffs) == 1 else None
