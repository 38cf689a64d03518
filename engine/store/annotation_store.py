"""The annotation store: one GeoPackage per annotation project.

Layers (DESIGN.md): ``tiles`` (polygons in the raster's CRS, one ``p_<label>`` column per
label), ``corrections`` (append-only history: the latest row per tile wins), ``models``,
``runs``, and ``label_columns`` (safe column name -> real label name).

Every write is one SQLite transaction: a job killed half way leaves a store that opens
and holds every tile committed before. A new store is built in a temporary file and
renamed into place, so a failure while creating it leaves no half-made file behind.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from rasterio.crs import CRS
from shapely.geometry import box

from engine.errors import StoreError
from engine.store import geopackage as gpkg

LABEL_SEPARATOR = "; "
STATUSES = ("predicted", "corrected", "verified")
UNDO_NOTE = "undo"
BUSY_TIMEOUT_MS = 30_000


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def label_columns(labels: Sequence[str]) -> list[str]:
    """Safe, unique ``p_<label>`` column names: lower-case ASCII letters, digits, '_'."""
    columns: list[str] = []
    for label in labels:
        slug = re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")[:48] or "label"
        name, k = f"p_{slug}", 2
        while name in columns:
            name, k = f"p_{slug}_{k}", k + 1
        columns.append(name)
    return columns


@dataclass(frozen=True)
class TileRecord:
    """One predicted tile, ready to write."""

    tile_id: str
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy in the store's CRS
    raster: str
    window: tuple[int, int, int, int]  # col, row, width, height in raster pixels
    gsd_m: float
    edge: bool
    valid_fraction: float
    probabilities: Sequence[float]
    predicted: Sequence[str]


class AnnotationStore:
    """An open annotation store; use :meth:`open` or :meth:`create_or_open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        rows = conn.execute("SELECT label, column_name FROM label_columns ORDER BY position")
        pairs = rows.fetchall()
        self.labels = [r[0] for r in pairs]
        self.columns = [r[1] for r in pairs]
        self.srs_id = conn.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE "
                                   "table_name = 'tiles'").fetchone()[0]

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path) -> "AnnotationStore":
        """Open an existing store; StoreError if it is missing or not a TileLabel store."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"annotation store not found: {path}")
        conn = _connect(path)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path} is not a GeoPackage ({exc}); choose another --out "
                             "path or delete the file") from exc
        if not {"tiles", "label_columns", "corrections", "runs"} <= tables:
            conn.close()
            raise StoreError(f"{path} is a GeoPackage but not a TileLabel annotation store; "
                             "choose another --out path so it is not modified")
        return cls(path, conn)

    @classmethod
    def create_or_open(cls, path: Path, labels: Sequence[str], crs: CRS) -> "AnnotationStore":
        """Open ``path`` (checking labels and CRS) or create it atomically."""
        path = Path(path)
        if path.exists():
            store = cls.open(path)
            store.check_compatible(labels, crs)
            return store
        _check_writable(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            conn = _connect(tmp)
            with conn:
                _create_schema(conn, labels, crs)
            conn.close()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    def check_compatible(self, labels: Sequence[str], crs: CRS) -> None:
        if list(labels) != self.labels:
            extra = sorted(set(labels) - set(self.labels))
            lacking = sorted(set(self.labels) - set(labels))
            detail = (f"the model has {len(labels)} labels, the store {len(self.labels)}"
                      + (f"; new: {', '.join(extra[:5])}" if extra else "")
                      + (f"; absent: {', '.join(lacking[:5])}" if lacking else ""))
            raise StoreError(f"{self.path} was written for another label set ({detail}). "
                             "Write to a new store (another --out path) or use the model "
                             "that made this store")
        srs = gpkg.srs_id_of(self.conn, crs)
        if srs != self.srs_id:
            raise StoreError(f"{self.path} holds tiles in another CRS (srs_id {self.srs_id}) "
                             f"than this raster ({crs.to_string()}); write to a new store")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs and models ---------------------------------------------------------------
    def begin_run(self, command: str, params: dict[str, Any]) -> str:
        run_id = f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.conn:
            self.conn.execute("INSERT INTO runs (run_id, command, parameters, started, outcome,"
                              " tiles_written, tiles_skipped_nodata) VALUES (?,?,?,?,?,0,0)",
                              (run_id, command, json.dumps(params, default=str), now(), "running"))
        return run_id

    def finish_run(self, run_id: str, outcome: str, tiles_written: int, tiles_skipped: int,
                   message: str = "", outputs: dict[str, Any] | None = None) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET ended=?, outcome=?, tiles_written=?, "
                              "tiles_skipped_nodata=?, message=?, outputs=? WHERE run_id=?",
                              (now(), outcome, tiles_written, tiles_skipped, message,
                               json.dumps(outputs or {}, default=str), run_id))

    def register_model(self, model_id: str, arch: str, path: str, metrics: dict[str, Any],
                       parent: str | None) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO models (model_id, arch, path, labels, metrics, parent, registered) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(model_id) DO UPDATE SET path=excluded.path, "
                "metrics=excluded.metrics", (model_id, arch, path, json.dumps(self.labels),
                                             json.dumps(metrics, default=str), parent, now()))

    # -- tiles -------------------------------------------------------------------------
    def write_tiles(self, records: Iterable[TileRecord], model_id: str, run_id: str) -> int:
        """Insert or update predictions in one transaction; corrections are kept.

        A tile that an analyst corrected or verified keeps its status and final labels;
        only its predictions and probabilities are refreshed.
        """
        p_cols = ", ".join(f'"{c}"' for c in self.columns)
        p_marks = ", ".join("?" for _ in self.columns)
        p_update = ", ".join(f'"{c}"=excluded."{c}"' for c in self.columns)
        sql = (f"INSERT INTO tiles (geom, tile_id, raster, win_col, win_row, win_width, "
               f"win_height, gsd_m, edge, valid_fraction, labels, n_labels, top_label, "
               f"top_prob, {p_cols}, status, final_labels, model_id, run_id, created, updated)"
               f" VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?, {p_marks}, 'predicted', ?,?,?,?,?) "
               f"ON CONFLICT(tile_id) DO UPDATE SET geom=excluded.geom, labels=excluded.labels,"
               f" n_labels=excluded.n_labels, top_label=excluded.top_label, top_prob="
               f"excluded.top_prob, {p_update}, valid_fraction=excluded.valid_fraction, "
               f"final_labels=CASE WHEN tiles.status='predicted' THEN excluded.final_labels "
               f"ELSE tiles.final_labels END, model_id=excluded.model_id, "
               f"run_id=excluded.run_id, updated=excluded.updated")
        stamp, rows, records_bounds = now(), [], []
        for r in records:
            records_bounds.append(tuple(r.bounds))
            probs = [float(p) for p in r.probabilities]
            top = max(range(len(probs)), key=probs.__getitem__)
            text = LABEL_SEPARATOR.join(r.predicted)
            rows.append((gpkg.geometry_blob(box(*r.bounds), self.srs_id), r.tile_id, r.raster,
                         *r.window, r.gsd_m, int(r.edge), r.valid_fraction, text,
                         len(r.predicted), self.labels[top], probs[top], *probs, text,
                         model_id, run_id, stamp, stamp))
        with self.conn:
            self.conn.executemany(sql, rows)
            self._grow_extent(records_bounds)
        return len(rows)

    def _grow_extent(self, bounds: list[tuple[float, float, float, float]]) -> None:
        """Widen the layer extent in gpkg_contents by this batch's tiles (no table scan)."""
        if not bounds:
            return
        minx, miny = min(b[0] for b in bounds), min(b[1] for b in bounds)
        maxx, maxy = max(b[2] for b in bounds), max(b[3] for b in bounds)
        self.conn.execute(
            "UPDATE gpkg_contents SET min_x = MIN(COALESCE(min_x, ?1), ?1), "
            "min_y = MIN(COALESCE(min_y, ?2), ?2), max_x = MAX(COALESCE(max_x, ?3), ?3), "
            "max_y = MAX(COALESCE(max_y, ?4), ?4), last_change = ?5 WHERE table_name = 'tiles'",
            (minx, miny, maxx, maxy, now()))

    def tile_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]

    def tile(self, tile_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM tiles WHERE tile_id = ?", (tile_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    # -- corrections -------------------------------------------------------------------
    def add_correction(self, tile_ids: Sequence[str], labels: Sequence[str] | None,
                       status: str = "corrected", author: str = "", note: str = "") -> None:
        """Record the final label set of tiles (a new history row each); ``verified`` with
        ``labels=None`` confirms each tile's current labels."""
        if status not in ("corrected", "verified"):
            raise StoreError(f"a correction's status is 'corrected' or 'verified', not {status!r}")
        unknown = sorted(set(labels or ()) - set(self.labels))
        if unknown:
            raise StoreError(f"unknown label(s) {', '.join(unknown)}; this store's labels are "
                             f"{', '.join(self.labels)}")
        stamp = now()
        with self.conn:
            for tid in tile_ids:
                row = self.conn.execute("SELECT final_labels FROM tiles WHERE tile_id=?",
                                        (tid,)).fetchone()
                if row is None:
                    raise StoreError(f"no tile '{tid}' in {self.path}")
                final = (LABEL_SEPARATOR.join(l for l in self.labels if l in set(labels))
                         if labels is not None else row[0])
                self.conn.execute("INSERT INTO corrections (tile_id, labels, status, author, "
                                  "note, created) VALUES (?,?,?,?,?,?)",
                                  (tid, final, status, author, note, stamp))
                self.conn.execute("UPDATE tiles SET final_labels=?, status=?, updated=? "
                                  "WHERE tile_id=?", (final, status, stamp, tid))

    def undo_last(self, tile_ids: Sequence[str], author: str = "") -> None:
        """Undo each tile's latest correction still in force by appending an ``undo`` row
        (history is never rewritten). The tile returns to the correction before it, or
        to its predicted labels and status ``predicted`` when there is none."""
        stamp = now()
        with self.conn:
            for tid in tile_ids:
                rows = self.conn.execute("SELECT labels, status, note FROM corrections "
                                         "WHERE tile_id=? ORDER BY fid", (tid,)).fetchall()
                in_force = _corrections_in_force(rows)
                if not in_force:
                    raise StoreError(f"tile '{tid}' has no correction to undo")
                in_force.pop()
                if in_force:
                    labels, status = in_force[-1]
                else:
                    labels = self.conn.execute("SELECT labels FROM tiles WHERE tile_id=?",
                                               (tid,)).fetchone()[0]
                    status = "predicted"
                self.conn.execute("INSERT INTO corrections (tile_id, labels, status, author, "
                                  "note, created) VALUES (?,?,?,?,?,?)",
                                  (tid, labels, status, author, UNDO_NOTE, stamp))
                self.conn.execute("UPDATE tiles SET final_labels=?, status=?, updated=? "
                                  "WHERE tile_id=?", (labels, status, stamp, tid))

    def corrections(self, tile_id: str) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM corrections WHERE tile_id=? ORDER BY fid",
                                (tile_id,))
        return [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]


def _corrections_in_force(rows_oldest_first: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Replay a tile's history (labels, status, note): each row noted ``undo`` cancels the
    newest state still in force. Returns the states in force, oldest first."""
    stack: list[tuple[str, str]] = []
    for labels, status, note in rows_oldest_first:
        if note == UNDO_NOTE:
            if stack:
                stack.pop()
        else:
            stack.append((labels, status))
    return stack


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot open the store {path} ({exc}); check the folder exists and "
                         "is writable") from exc
    conn.isolation_level = "DEFERRED"
    gpkg.register_functions(conn)
    return conn


def _check_writable(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise StoreError(f"cannot write the store {path}: folder {folder} does not exist; "
                         "create it or choose another --out path")
    if not os.access(folder, os.W_OK):
        raise StoreError(f"cannot write the store {path}: folder {folder} is not writable; "
                         "choose another --out path")
    if path.suffix.lower() != ".gpkg":
        raise StoreError(f"the store must be a GeoPackage file ending in .gpkg, got {path.name}")


def _create_schema(conn: sqlite3.Connection, labels: Sequence[str], crs: CRS) -> None:
    gpkg.initialise(conn)
    srs_id = gpkg.register_srs(conn, crs)
    p_cols = ", ".join(f'"{c}" REAL' for c in label_columns(labels))
    gpkg.add_feature_table(conn, "tiles", (
        "tile_id TEXT NOT NULL UNIQUE, raster TEXT NOT NULL, win_col INTEGER, win_row INTEGER,"
        " win_width INTEGER, win_height INTEGER, gsd_m REAL, edge INTEGER, valid_fraction REAL,"
        f" labels TEXT, n_labels INTEGER, top_label TEXT, top_prob REAL, {p_cols},"
        " status TEXT NOT NULL DEFAULT 'predicted', final_labels TEXT, model_id TEXT,"
        " run_id TEXT, created TEXT, updated TEXT"), "POLYGON", srs_id,
        "TileLabel tiles: predicted labels, per-label probabilities, review status")
    gpkg.add_attribute_table(conn, "corrections", "tile_id TEXT NOT NULL, labels TEXT, "
                             "status TEXT, author TEXT, note TEXT, created TEXT",
                             "label corrections, one row per edit; the latest wins")
    gpkg.add_attribute_table(conn, "models", "model_id TEXT NOT NULL UNIQUE, arch TEXT, "
                             "path TEXT, labels TEXT, metrics TEXT, parent TEXT, registered TEXT",
                             "model versions that wrote into this store")
    gpkg.add_attribute_table(conn, "runs", "run_id TEXT NOT NULL UNIQUE, command TEXT, "
                             "parameters TEXT, started TEXT, ended TEXT, outcome TEXT, "
                             "tiles_written INTEGER, tiles_skipped_nodata INTEGER, message TEXT,"
                             " outputs TEXT", "jobs that wrote into this store")
    gpkg.add_attribute_table(conn, "label_columns", "position INTEGER NOT NULL, label TEXT "
                             "NOT NULL, column_name TEXT NOT NULL",
                             "real label name of each p_<label> column of tiles")
    conn.executemany("INSERT INTO label_columns (position, label, column_name) VALUES (?,?,?)",
                     [(i, l, c) for i, (l, c) in enumerate(zip(labels, label_columns(labels)))])
    conn.execute("CREATE INDEX corrections_tile ON corrections (tile_id)")
