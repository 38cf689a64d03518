"""Minimal GeoPackage 1.3 writer on sqlite3 (OGC 12-128r18).

The annotation store needs transactions it controls (a killed job must leave a store
that opens with every committed tile), so it writes the GeoPackage tables itself rather
than through a library that rewrites whole layers. This module knows the GeoPackage
core: the application id, the spatial reference and contents tables, geometry columns,
the geometry blob header, and an R-tree spatial index kept up to date by triggers.
"""
from __future__ import annotations

import sqlite3
import struct

from rasterio.crs import CRS
from shapely import wkb
from shapely.geometry.base import BaseGeometry

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300         # GeoPackage 1.3.0

_CORE_SQL = """
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT
  (strftime('%Y-%m-%dT%H:%M:%fZ','now')), min_x DOUBLE, min_y DOUBLE, max_x DOUBLE,
  max_y DOUBLE, srs_id INTEGER, CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id)
  REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
  table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE IF NOT EXISTS gpkg_extensions (
  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
  scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES
  ('Undefined cartesian SRS', -1, 'NONE', -1, 'undefined', 'undefined cartesian coordinate reference system'),
  ('Undefined geographic SRS', 0, 'NONE', 0, 'undefined', 'undefined geographic coordinate reference system'),
  ('WGS 84 geodetic', 4326, 'EPSG', 4326, 'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]]', 'longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid');
"""

CUSTOM_SRS_BASE = 100000


def initialise(conn: sqlite3.Connection) -> None:
    """Make an empty SQLite file a GeoPackage 1.3 (idempotent)."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {USER_VERSION}")
    conn.executescript(_CORE_SQL)


def register_srs(conn: sqlite3.Connection, crs: CRS) -> int:
    """The srs_id of ``crs`` in this GeoPackage, adding it if needed (EPSG code when known)."""
    epsg = crs.to_epsg()
    wkt = crs.to_wkt()
    if epsg is not None:
        conn.execute("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?,?,?,?,?,?)",
                     (crs.to_string(), epsg, "EPSG", epsg, wkt, ""))
        return epsg
    row = conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys WHERE definition = ?",
                       (wkt,)).fetchone()
    if row:
        return int(row[0])
    srs_id = max(CUSTOM_SRS_BASE, conn.execute(
        "SELECT COALESCE(MAX(srs_id), 0) + 1 FROM gpkg_spatial_ref_sys").fetchone()[0])
    conn.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?,?,?,?,?,?)",
                 (crs.to_string()[:80] or "custom", srs_id, "NONE", srs_id, wkt, ""))
    return srs_id


def add_feature_table(conn: sqlite3.Connection, table: str, columns_sql: str,
                      geometry_type: str, srs_id: int, description: str) -> None:
    """Create a feature table with a ``geom`` column and its R-tree index."""
    conn.execute(f'CREATE TABLE "{table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, '
                 f'geom {geometry_type}, {columns_sql})')
    conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                 "srs_id) VALUES (?, 'features', ?, ?, ?)", (table, table, description, srs_id))
    conn.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
                 (table, geometry_type, srs_id))
    _add_rtree(conn, table)


def add_attribute_table(conn: sqlite3.Connection, table: str, columns_sql: str,
                        description: str) -> None:
    """Create a non-spatial table that GIS software lists as a layer."""
    conn.execute(f'CREATE TABLE "{table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, {columns_sql})')
    conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description) "
                 "VALUES (?, 'attributes', ?, ?)", (table, table, description))


def _add_rtree(conn: sqlite3.Connection, t: str) -> None:
    """The gpkg_rtree_index extension: a virtual R-tree kept current by the six triggers
    GeoPackage 1.3 names (insert, update1-4, delete).

    Where the spec's trigger bodies use INSERT OR REPLACE, these delete then insert: an
    UPSERT on the feature table overrides a trigger's conflict policy, so OR REPLACE
    would fail there.
    """
    idx = f"rtree_{t}_geom"
    conn.execute(f'CREATE VIRTUAL TABLE "{idx}" USING rtree(id, minx, maxx, miny, maxy)')
    conn.execute("INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
                 "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')", (t,))
    env = "ST_MinX(NEW.geom), ST_MaxX(NEW.geom), ST_MinY(NEW.geom), ST_MaxY(NEW.geom)"
    not_empty = "NEW.geom NOT NULL AND NOT ST_IsEmpty(NEW.geom)"
    empty = "(NEW.geom IS NULL OR ST_IsEmpty(NEW.geom))"
    conn.executescript(f"""
CREATE TRIGGER "{idx}_insert" AFTER INSERT ON "{t}" WHEN ({not_empty})
BEGIN INSERT INTO "{idx}" VALUES (NEW.fid, {env}); END;
CREATE TRIGGER "{idx}_update1" AFTER UPDATE OF geom ON "{t}"
WHEN OLD.fid = NEW.fid AND {not_empty}
BEGIN DELETE FROM "{idx}" WHERE id = OLD.fid; INSERT INTO "{idx}" VALUES (NEW.fid, {env}); END;
CREATE TRIGGER "{idx}_update2" AFTER UPDATE OF geom ON "{t}"
WHEN OLD.fid = NEW.fid AND {empty}
BEGIN DELETE FROM "{idx}" WHERE id = OLD.fid; END;
CREATE TRIGGER "{idx}_update3" AFTER UPDATE ON "{t}"
WHEN OLD.fid != NEW.fid AND {not_empty}
BEGIN DELETE FROM "{idx}" WHERE id = OLD.fid; INSERT INTO "{idx}" VALUES (NEW.fid, {env}); END;
CREATE TRIGGER "{idx}_update4" AFTER UPDATE ON "{t}"
WHEN OLD.fid != NEW.fid AND {empty}
BEGIN DELETE FROM "{idx}" WHERE id IN (OLD.fid, NEW.fid); END;
CREATE TRIGGER "{idx}_delete" AFTER DELETE ON "{t}" WHEN OLD.geom NOT NULL
BEGIN DELETE FROM "{idx}" WHERE id = OLD.fid; END;
""")


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions the R-tree triggers call (GDAL and QGIS provide their own)."""
    for name, k in (("ST_MinX", 0), ("ST_MaxX", 1), ("ST_MinY", 2), ("ST_MaxY", 3)):
        conn.create_function(name, 1, lambda blob, k=k: _envelope(blob)[k] if blob else None,
                             deterministic=True)
    conn.create_function("ST_IsEmpty", 1,
                         lambda blob: None if blob is None else int(bool(blob[3] & 0b10000)),
                         deterministic=True)


def geometry_blob(geom: BaseGeometry, srs_id: int) -> bytes:
    """GeoPackage geometry blob: 'GP', version 0, flags (little endian, xy envelope), srs, WKB."""
    minx, miny, maxx, maxy = geom.bounds
    header = struct.pack("<2sBBi4d", b"GP", 0, 0b00000011, srs_id, minx, maxx, miny, maxy)
    return header + wkb.dumps(geom, byte_order=1)


def _envelope(blob: bytes) -> tuple[float, float, float, float]:
    flags = blob[3]
    env_kind = (flags >> 1) & 0b111
    endian = "<" if flags & 1 else ">"
    if env_kind >= 1:
        return struct.unpack(endian + "4d", blob[8:40])
    geom = read_geometry(blob)
    minx, miny, maxx, maxy = geom.bounds
    return minx, maxx, miny, maxy


def read_geometry(blob: bytes) -> BaseGeometry:
    flags = blob[3]
    env_size = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(flags >> 1) & 0b111]
    return wkb.loads(bytes(blob[8 + env_size:]))


def srs_id_of(conn: sqlite3.Connection, crs: CRS) -> int:
    """The srs_id this GeoPackage uses for ``crs``; -999 when it does not hold it."""
    epsg = crs.to_epsg()
    if epsg is not None:
        row = conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys WHERE srs_id=?",
                           (epsg,)).fetchone()
        return int(row[0]) if row else -999
    row = conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys WHERE definition=?",
                       (crs.to_wkt(),)).fetchone()
    return int(row[0]) if row else -999
