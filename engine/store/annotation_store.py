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
import math
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from engine.errors import StoreError
from engine.store import geopackage as gpkg

LABEL_SEPARATOR = "; "
STATUSES = ("predicted", "corrected", "verified")
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
    footprint: Polygon | None = None  # the tile in the store's CRS when not a box there
    raster_crs: str = ""              # the CRS of the raster the tile was cut from


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
        except sqlite3.OperationalError:
            conn.close()
            raise  # the disk or the file's permissions, not its content (see cli.py)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path} is not a GeoPackage ({exc}); choose another --out "
                             "path or delete the file") from exc
        if not {"tiles", "label_columns", "corrections", "runs"} <= tables:
            conn.close()
            raise StoreError(f"{path} is a GeoPackage but not a TileLabel annotation store; "
                             "choose another --out path so it is not modified")
        try:
            _migrate_corrections(conn)
            _migrate_raster_crs(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "readonly" not in str(exc):
                raise
            raise StoreError(f"{path} was written by an older TileLabel and needs a small "
                             f"upgrade, which failed ({exc}); copy the store to a writable "
                             "folder and open the copy") from exc
        return cls(path, conn)

    @classmethod
    def create_or_open(cls, path: Path, labels: Sequence[str], crs: CRS) -> "AnnotationStore":
        """Open ``path`` (checking labels and CRS) or create it atomically."""
        path = Path(path)
        check_label_names(labels, "the model's labels")
        if path.exists():
            store = cls.open(path)
            store.check_compatible(labels, crs)
            return store
        check_writable(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            conn = _connect(tmp)
            with conn:
                _create_schema(conn, labels, crs)
            use_wal(conn)
            conn.close()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    def check_compatible(self, labels: Sequence[str], crs: CRS) -> None:
        if list(labels) != self.labels and sorted(labels) == sorted(self.labels):
            raise StoreError(f"{self.path} was written for the same labels in another order "
                             "(the model's label order differs from the store's); write to a "
                             "new store or use the model that made this store")
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

    def crs(self) -> CRS:
        """The CRS the tiles' polygons are in."""
        org, code, wkt = self.conn.execute(
            "SELECT organization, organization_coordsys_id, definition FROM "
            "gpkg_spatial_ref_sys WHERE srs_id=?", (self.srs_id,)).fetchone()
        return CRS.from_epsg(code) if str(org).upper() == "EPSG" else CRS.from_wkt(wkt)

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

    def mark_stale_runs(self) -> int:
        """Runs still ``running`` when a job holding the store's lock opens it ended
        without finishing (killed or crashed): mark them so. Returns how many."""
        with self.conn:
            cur = self.conn.execute(
                "UPDATE runs SET outcome='killed', ended=?, message='the job ended without "
                "finishing (killed or crashed); the tiles it committed stay' WHERE "
                "outcome='running'", (now(),))
        return cur.rowcount

    def finish_run(self, run_id: str, outcome: str, tiles_written: int, tiles_skipped: int,
                   message: str = "", outputs: dict[str, Any] | None = None) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET ended=?, outcome=?, tiles_written=?, "
                              "tiles_skipped_nodata=?, message=?, outputs=? WHERE run_id=?",
                              (now(), outcome, tiles_written, tiles_skipped, message,
                               json.dumps(outputs or {}, default=str), run_id))

    def record_outputs(self, run_id: str, outputs: dict[str, Any]) -> None:
        """Commit what a running job has finished so far (per-raster outcomes), so that a
        job killed later still leaves them for a re-run to skip."""
        with self.conn:
            self.conn.execute("UPDATE runs SET outputs=? WHERE run_id=?",
                              (json.dumps(outputs, default=str), run_id))

    def _annotate_outputs(self) -> Iterator[dict[str, Any]]:
        """The ``outputs`` of every annotate run, unreadable ones left out."""
        for (text,) in self.conn.execute("SELECT outputs FROM runs WHERE command='annotate'"):
            try:
                outputs = json.loads(text or "{}")
            except ValueError:
                continue
            if isinstance(outputs, dict):
                yield outputs

    def completed_rasters(self, model_id: str) -> set[str]:
        """Rasters some run annotated to the end with ``model_id`` (per-raster outcomes of
        multi-raster runs, killed ones included: each outcome was committed when its
        raster ended)."""
        done: set[str] = set()
        for outputs in self._annotate_outputs():
            rasters = outputs.get("rasters", [])
            done |= {r["raster"] for r in rasters if isinstance(r, dict)
                     and r.get("outcome") == "completed" and r.get("model_id") == model_id}
        return done

    def completed_blocks(self, model_id: str, raster: str, layout: dict[str, Any]
                         ) -> dict[int, str | None]:
        """Blocks of ``raster`` that earlier cluster runs of ``model_id`` committed with the
        same block ``layout`` (block index -> its attention piece, or None): what a re-run
        of a killed job need not compute again."""
        done: dict[int, str | None] = {}
        for outputs in self._annotate_outputs():
            entry = (outputs.get("blocks") or {}).get(raster)
            if (isinstance(entry, dict) and entry.get("model_id") == model_id
                    and entry.get("layout") == layout):
                done.update({int(k): v for k, v in (entry.get("done") or {}).items()})
        return done

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
        sql = (f"INSERT INTO tiles (geom, tile_id, raster, raster_crs, win_col, win_row, "
               f"win_width, win_height, gsd_m, edge, valid_fraction, labels, n_labels, "
               f"top_label, top_prob, {p_cols}, status, final_labels, model_id, run_id, "
               f"created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, {p_marks}, "
               f"'predicted', ?,?,?,?,?) "
               f"ON CONFLICT(tile_id) DO UPDATE SET geom=excluded.geom, labels=excluded.labels,"
               f" n_labels=excluded.n_labels, top_label=excluded.top_label, top_prob="
               f"excluded.top_prob, {p_update}, valid_fraction=excluded.valid_fraction, "
               f"final_labels=CASE WHEN tiles.status='predicted' THEN excluded.final_labels "
               f"ELSE tiles.final_labels END, model_id=excluded.model_id, "
               f"run_id=excluded.run_id, updated=excluded.updated")
        stamp, rows, records_bounds = now(), [], []
        for r in records:
            shape = r.footprint if r.footprint is not None else box(*r.bounds)
            records_bounds.append(tuple(shape.bounds))
            probs = [float(p) for p in r.probabilities]
            if not all(math.isfinite(p) for p in probs):
                raise StoreError(f"the model gave tile {r.tile_id} a probability that is not a "
                                 "number; nothing of this batch was written. The model's "
                                 "weights or normalisation (model.json mean/std) are broken")
            top = max(range(len(probs)), key=probs.__getitem__)
            text = join_labels(r.predicted)
            rows.append((gpkg.geometry_blob(shape, self.srs_id), r.tile_id, r.raster,
                         r.raster_crs, *r.window, r.gsd_m, int(r.edge), r.valid_fraction, text,
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
    # Each edit is an *action* (one id for every tile it touched); an undo row names the
    # action it cancels (``undoes``), so undo is structural: no note is ever read as a marker.
    def add_correction(self, tile_ids: Sequence[str], labels: Sequence[str] | None,
                       status: str = "corrected", author: str = "", note: str = "") -> str:
        """Record the final label set of tiles (a new history row each); ``verified`` with
        ``labels=None`` confirms each tile's current labels. Returns the action id."""
        if status not in ("corrected", "verified"):
            raise StoreError(f"a correction's status is 'corrected' or 'verified', not {status!r}")
        self._check_labels(labels or ())
        kind = "verify" if status == "verified" else "correct"
        return self._apply(tile_ids, lambda current: (
            current if labels is None else set(labels)), status, kind, author, note)

    def change_label(self, tile_ids: Sequence[str], label: str, present: bool,
                     author: str = "", note: str = "") -> str:
        """Add (``present``) or remove one label on each tile, keeping each tile's other
        labels: the panel's tick on a multi-selection. Returns the action id."""
        self._check_labels([label])
        return self._apply(tile_ids, lambda current: (
            current | {label} if present else current - {label}), "corrected", "correct",
            author, note)

    def _check_labels(self, labels: Iterable[str]) -> None:
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise StoreError(f"unknown label(s) {', '.join(unknown)}; this store's labels are "
                             f"{', '.join(self.labels)}")

    def _apply(self, tile_ids: Sequence[str], new_labels, status: str, kind: str,
               author: str, note: str) -> str:
        if not tile_ids:
            raise StoreError("no tiles given: name at least one tile id (--tile)")
        stamp, action = now(), _action_id()
        with self.conn:
            for tid in dict.fromkeys(tile_ids):
                row = self.conn.execute("SELECT final_labels FROM tiles WHERE tile_id=?",
                                        (tid,)).fetchone()
                if row is None:
                    raise StoreError(f"no tile '{tid}' in {self.path}")
                wanted = new_labels(set(split_labels(row[0])))
                final = join_labels([l for l in self.labels if l in wanted])
                self.conn.execute("INSERT INTO corrections (tile_id, labels, status, author, "
                                  "note, created, action_id, kind) VALUES (?,?,?,?,?,?,?,?)",
                                  (tid, final, status, author, note, stamp, action, kind))
                self.conn.execute("UPDATE tiles SET final_labels=?, status=?, updated=? "
                                  "WHERE tile_id=?", (final, status, stamp, tid))
        return action

    def last_action(self, tile_ids: Sequence[str] | None = None) -> str | None:
        """The newest action still in force (touching one of ``tile_ids`` if given)."""
        sql = ("SELECT action_id FROM corrections WHERE kind != 'undo' AND action_id NOT IN "
               "(SELECT undoes FROM corrections WHERE undoes IS NOT NULL)")
        params: tuple = ()
        if tile_ids:
            sql += f" AND tile_id IN ({','.join('?' for _ in tile_ids)})"
            params = tuple(tile_ids)
        row = self.conn.execute(sql + " ORDER BY fid DESC LIMIT 1", params).fetchone()
        return row[0] if row else None

    def undo_last(self, tile_ids: Sequence[str] | None = None, author: str = "") -> list[str]:
        """Undo the newest action still in force as a whole (every tile it touched), by
        appending ``undo`` rows (history is never rewritten). With ``tile_ids``, the newest
        action that touched one of them. Each tile returns to the state before that action:
        the correction before it, or its predicted labels and status ``predicted``.
        Returns the tiles it changed."""
        with self.conn:
            action = self.last_action(tile_ids)
            if action is None:
                where = f"tile(s) {', '.join(tile_ids)}" if tile_ids else str(self.path)
                raise StoreError(f"{where}: no correction to undo")
            touched = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT tile_id FROM corrections WHERE action_id=? ORDER BY fid",
                (action,))]
            stamp, undo_id = now(), _action_id()
            for tid in touched:
                labels, status = self._state_without(tid, action)
                self.conn.execute("INSERT INTO corrections (tile_id, labels, status, author, "
                                  "note, created, action_id, kind, undoes) VALUES "
                                  "(?,?,?,?,?,?,?,?,?)", (tid, labels, status, author, "",
                                                          stamp, undo_id, "undo", action))
                self.conn.execute("UPDATE tiles SET final_labels=?, status=?, updated=? "
                                  "WHERE tile_id=?", (labels, status, stamp, tid))
        return touched

    def _state_without(self, tile_id: str, action: str) -> tuple[str, str]:
        """A tile's (final labels, status) once ``action`` and every undone action are
        cancelled: its newest correction still in force, else its prediction."""
        row = self.conn.execute(
            "SELECT labels, status FROM corrections WHERE tile_id=? AND kind != 'undo' AND "
            "action_id != ? AND action_id NOT IN (SELECT undoes FROM corrections WHERE undoes "
            "IS NOT NULL) ORDER BY fid DESC LIMIT 1", (tile_id, action)).fetchone()
        if row:
            return row[0], row[1]
        predicted = self.conn.execute("SELECT labels FROM tiles WHERE tile_id=?",
                                      (tile_id,)).fetchone()[0]
        return predicted, "predicted"

    def corrections(self, tile_id: str) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM corrections WHERE tile_id=? ORDER BY fid",
                                (tile_id,))
        return [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]


def split_labels(text: str | None) -> list[str]:
    """The label names of a ``; ``-joined label text (the store's text columns)."""
    return [l for l in (text or "").split(LABEL_SEPARATOR) if l]


def join_labels(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(labels)


def check_label_names(labels: Sequence[str], where: str) -> None:
    """Refuse label names that the store's ``; ``-joined text columns cannot hold."""
    bad = [l for l in labels if ";" in l or l != l.strip() or not l]
    if bad:
        raise StoreError(f"{where}: label name(s) {', '.join(map(repr, bad))} cannot be used: "
                         "a label name must not be empty, contain ';' or start or end with "
                         "spaces (TileLabel stores label sets as '; '-separated text). "
                         "Rename them in the dataset's label file")


def _action_id() -> str:
    return uuid.uuid4().hex[:12]


def _migrate_raster_crs(conn: sqlite3.Connection) -> None:
    """Give a store written before multi-raster annotation its tiles' ``raster_crs``."""
    if "raster_crs" not in {r[1] for r in conn.execute("PRAGMA table_info(tiles)")}:
        with conn:
            conn.execute("ALTER TABLE tiles ADD COLUMN raster_crs TEXT")


def _migrate_corrections(conn: sqlite3.Connection) -> None:
    """Give a store written before structured undo its ``action_id``/``kind``/``undoes``
    columns; an old undo row (note 'undo') is linked to the row it cancelled."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(corrections)")}
    if "kind" in columns:
        return
    with conn:
        for name in ("action_id", "kind", "undoes"):
            conn.execute(f"ALTER TABLE corrections ADD COLUMN {name} TEXT")
        rows = conn.execute("SELECT fid, tile_id, status, note FROM corrections ORDER BY fid")
        stacks: dict[str, list[int]] = {}
        for fid, tid, status, note in rows.fetchall():
            stack = stacks.setdefault(tid, [])
            if note == "undo":
                undone = stack.pop() if stack else None
                conn.execute("UPDATE corrections SET action_id=?, kind='undo', undoes=?, "
                             "note='' WHERE fid=?", (f"legacy-{fid}", undone and
                                                     f"legacy-{undone}", fid))
            else:
                stack.append(fid)
                conn.execute("UPDATE corrections SET action_id=?, kind=? WHERE fid=?",
                             (f"legacy-{fid}", "verify" if status == "verified" else
                              "correct", fid))


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot open the store {path} ({exc}); check the folder exists and "
                         "is writable") from exc
    conn.isolation_level = "DEFERRED"
    gpkg.register_functions(conn)
    return conn


def check_writable(path: Path) -> None:
    """Refuse a store path whose folder is missing or read-only, or that is no .gpkg."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise StoreError(f"cannot write the store {path}: folder {folder} does not exist; "
                         "create it or choose another --out path")
    if not os.access(folder, os.W_OK):
        raise StoreError(f"cannot write the store {path}: folder {folder} is not writable; "
                         "choose another --out path")
    if path.suffix.lower() != ".gpkg":
        raise StoreError(f"the store must be a GeoPackage file ending in .gpkg, got {path.name}")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(f"the store {path} is read-only; make it writable or choose another "
                         "--out path")


def use_wal(conn: sqlite3.Connection) -> None:
    """Write-ahead logging, which GeoPackage allows: readers (QGIS with an open attribute
    table) never block the writer and the writer never blocks them. The store then has
    ``-wal``/``-shm`` companion files while it is open. Where the file system cannot do
    WAL (some network shares), SQLite keeps its rollback journal."""
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass


def remove_leftovers(path: Path) -> None:
    """Delete hidden temporary files of a store creation that was killed half way
    (``.<name>.<hex>.tmp``); call only while holding the store's job lock."""
    for leftover in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _create_schema(conn: sqlite3.Connection, labels: Sequence[str], crs: CRS) -> None:
    gpkg.initialise(conn)
    srs_id = gpkg.register_srs(conn, crs)
    p_cols = ", ".join(f'"{c}" REAL' for c in label_columns(labels))
    gpkg.add_feature_table(conn, "tiles", (
        "tile_id TEXT NOT NULL UNIQUE, raster TEXT NOT NULL, raster_crs TEXT, win_col INTEGER,"
        " win_row INTEGER,"
        " win_width INTEGER, win_height INTEGER, gsd_m REAL, edge INTEGER, valid_fraction REAL,"
        f" labels TEXT, n_labels INTEGER, top_label TEXT, top_prob REAL, {p_cols},"
        " status TEXT NOT NULL DEFAULT 'predicted', final_labels TEXT, model_id TEXT,"
        " run_id TEXT, created TEXT, updated TEXT"), "POLYGON", srs_id,
        "TileLabel tiles: predicted labels, per-label probabilities, review status")
    gpkg.add_attribute_table(conn, "corrections", "tile_id TEXT NOT NULL, labels TEXT, "
                             "status TEXT, author TEXT, note TEXT, created TEXT, "
                             "action_id TEXT, kind TEXT, undoes TEXT",
                             "label corrections, one row per tile and edit (action_id groups "
                             "one edit's rows; kind correct/verify/undo; an undo row names the"
                             " action it cancels in undoes); the latest in force wins")
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
