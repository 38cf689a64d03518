"""Exporting reviewed tiles: a GeoPackage of final labels, optionally image chips.

The export holds one ``labelled_tiles`` polygon layer (the store's CRS): tile id, source
raster and pixel window, final labels (``; ``-separated), status, model, times, and one
0/1 ``l_<label>`` column per label. With a chips folder, each tile's raster window is
also written as a GeoTIFF chip (native resolution, all bands) plus ``labels.csv``
(chip, tile_id, labels), for training elsewhere. The export is built in a temporary
file and renamed into place.
"""
from __future__ import annotations

import csv
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.windows import Window

from engine.errors import StoreError
from engine.store import geopackage as gpkg
from engine.store.annotation_store import LABEL_SEPARATOR, AnnotationStore, label_columns

DEFAULT_STATUSES = ("corrected", "verified")


def export_labelled(store_path: Path, out: Path, statuses: Sequence[str] = DEFAULT_STATUSES,
                    chips_dir: Path | None = None) -> dict:
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise StoreError(f"the export must be a .gpkg file, got {out.name}")
    if not out.parent.is_dir():
        raise StoreError(f"folder {out.parent} does not exist; create it or choose another path")
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
    _write_export(out, rows, labels, srs)
    chips = _write_chips(Path(chips_dir), rows) if chips_dir else 0
    return {"export": str(out.resolve()), "tiles": len(rows), "chips": chips,
            "chips_dir": str(Path(chips_dir).resolve()) if chips_dir else None}


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
                final = [l for l in (r[7] or "").split(LABEL_SEPARATOR) if l]
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


def _write_chips(folder: Path, rows: list) -> int:
    folder.mkdir(parents=True, exist_ok=True)
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
