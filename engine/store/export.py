"""Exporting reviewed tiles: a GeoPackage of final labels, optionally image chips.

The export holds one ``labelled_tiles`` polygon layer (the store's CRS): tile id, source
raster and pixel window, final labels (``; ``-separated), status, model, times, and one
0/1 ``l_<label>`` column per label. With a chips folder, each tile's raster window is
also written as a GeoTIFF chip (native resolution, all bands) plus ``labels.csv``
(chip, tile_id, labels), for training elsewhere. The export is built in a temporary
file and renamed into place (the chips in a hidden folder); an existing file is
replaced only when asked, and the store itself never.
"""
from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.windows import Window

from engine.errors import StoreError
from engine.store import geopackage as gpkg
from engine.store.annotation_store import AnnotationStore, label_columns, split_labels

DEFAULT_STATUSES = ("corrected", "verified")


def export_labelled(store_path: Path, out: Path, statuses: Sequence[str] = DEFAULT_STATUSES,
                    chips_dir: Path | None = None, overwrite: bool = False) -> dict:
    """Write the tiles of ``statuses`` to ``out`` (and chips); nothing is replaced unless
    ``overwrite``, and the store itself never is."""
    out, chips = Path(out), Path(chips_dir) if chips_dir else None
    _check_target(Path(store_path), out, chips, overwrite)
    with AnnotationStore.open(store_path) as store:
        marks = ",".join("?" for _ in statuses)
        cur = store.conn.execute(
            f"SELECT geom, tile_id, raster, win_col, win_row, win_width, win_height, "
            f"final_labels, status, model_id, created, updated FROM tiles WHERE status IN "
            f"({marks}) ORDER BY fid", tuple(statuses))
        rows = cur.fetchall()
        labels, srs_id = store.labels, store.srs_id
        srs = store.conn.execute("SELECT srs_name, srs_id, organization, organization_coordsys_id,"
                                 " definition, description FROM gpkg_spatial_ref_sys WHERE "
                                 "srs_id=?", (srs_id,)).fetchone()
    if not rows:
        raise StoreError(f"{store_path} has no tiles with status {', '.join(statuses)} to "
                         "export; correct or verify tiles first")
    if chips:
        _check_rasters(rows)
        _write_chips_atomically(chips, rows, overwrite)
    _write_export(out, rows, labels, srs)
    return {"export": str(out.resolve()), "tiles": len(rows), "chips": len(rows) if chips else 0,
            "chips_dir": str(chips.resolve()) if chips else None}


def _check_target(store: Path, out: Path, chips: Path | None, overwrite: bool) -> None:
    """Refuse, before anything is written, an export that would replace its own input or,
    without ``overwrite``, any existing file."""
    if out.suffix.lower() != ".gpkg":
        raise StoreError(f"the export must be a .gpkg file, got {out.name}")
    if not out.parent.is_dir():
        raise StoreError(f"folder {out.parent} does not exist; create it or choose another path")
    if out.exists() and store.exists() and os.path.samefile(out, store):
        raise StoreError(f"--out {out} is the annotation store itself; exporting there would "
                         "replace it. Choose another file for the export")
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; choose another --out file, or pass "
                         "--overwrite to replace it")
    if out.exists() and not out.is_file():
        raise StoreError(f"{out} exists and is not a file; choose another --out path")
    if chips and chips.exists() and any(chips.iterdir()) and not overwrite:
        raise StoreError(f"chips folder {chips} already holds files; choose another folder, "
                         "or pass --overwrite to replace it")
    if chips and chips.exists() and store.resolve().is_relative_to(chips.resolve()):
        raise StoreError(f"chips folder {chips} holds the annotation store; choose another "
                         "folder")


def _check_rasters(rows: list) -> None:
    missing = sorted({r[2] for r in rows if not Path(r[2]).is_file()})
    if missing:
        raise StoreError(f"cannot write chips: the raster {missing[0]} (of {len(missing)} "
                         "missing) is no longer where the store recorded it; put it back, or "
                         "export without --chips")


def _write_export(out: Path, rows: list, labels: list[str], srs: tuple) -> None:
    cols = [c.replace("p_", "l_", 1) for c in label_columns(labels)]
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        conn = sqlite3.connect(tmp)
        gpkg.register_functions(conn)
        with conn:
            gpkg.initialise(conn)
            conn.execute("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?,?,?,?,?,?)", srs)
            gpkg.add_feature_table(conn, "labelled_tiles", (
                "tile_id TEXT NOT NULL UNIQUE, raster TEXT, win_col INTEGER, win_row INTEGER, "
                "win_width INTEGER, win_height INTEGER, labels TEXT, status TEXT, model_id TEXT, "
                "created TEXT, updated TEXT, " + ", ".join(f'"{c}" INTEGER' for c in cols)),
                "POLYGON", srs[1], "TileLabel export: reviewed tiles and their final labels")
            marks = ",".join("?" for _ in range(12 + len(cols)))
            names = ", ".join(f'"{c}"' for c in cols)
            for r in rows:
                final = split_labels(r[7])
                conn.execute(f"INSERT INTO labelled_tiles (geom, tile_id, raster, win_col, "
                             f"win_row, win_width, win_height, labels, status, model_id, created,"
                             f" updated, {names}) VALUES ({marks})",
                             (*r, *[int(l in final) for l in labels]))
            conn.execute("UPDATE gpkg_contents SET (min_x, max_x, min_y, max_y) = (SELECT "
                         "MIN(minx), MAX(maxx), MIN(miny), MAX(maxy) FROM "
                         "rtree_labelled_tiles_geom) WHERE table_name='labelled_tiles'")
        conn.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_chips_atomically(folder: Path, rows: list, overwrite: bool) -> None:
    """Build the chips in a hidden sibling folder, then put it in place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_chips(tmp, rows)
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_chips(folder: Path, rows: list) -> int:
    with open(folder / "labels.csv", "w", newline="") as fh:
        table = csv.writer(fh)
        table.writerow(["chip", "tile_id", "labels"])
        for n, r in enumerate(rows):
            _, tid, raster, c, row, w, h, final = r[:8]
            name = f"chip_{n:06d}.tif"
            with rasterio.open(raster) as src:
                win = Window(c, row, w, h)
                data = src.read(window=win, boundless=True, fill_value=src.nodata or 0)
                profile = {"driver": "GTiff", "width": w, "height": h, "count": src.count,
                           "dtype": src.dtypes[0], "crs": src.crs, "nodata": src.nodata,
                           "transform": src.window_transform(win), "compress": "deflate"}
                with rasterio.open(folder / name, "w", **profile) as dst:
                    dst.write(data)
                    dst.descriptions = src.descriptions
            table.writerow([name, tid, final or ""])
    return len(rows)
