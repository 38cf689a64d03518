"""Read-only access to an annotation store from the plugin (no engine import).

Writes always go through the engine; the plugin only reads the store's small tables.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

LABEL_SEPARATOR = "; "  # as engine.store.annotation_store writes label sets


@contextmanager
def read_store(store: str) -> Iterator[sqlite3.Connection]:
    """A read-only SQLite connection to ``store``. The path goes through a proper
    ``file:`` URI, so names holding '#', '%' or '?' open the right file and a missing
    store is an error rather than a new empty file."""
    uri = Path(store).resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        yield conn


def store_labels(store: str) -> list[str]:
    with read_store(store) as conn:
        return [r[0] for r in conn.execute("SELECT label FROM label_columns ORDER BY position")]


def label_columns(store: str) -> list[tuple[str, str]]:
    """(label, p_<label> column) pairs in model order."""
    with read_store(store) as conn:
        return conn.execute("SELECT label, column_name FROM label_columns "
                            "ORDER BY position").fetchall()


def split_labels(text: str | None) -> list[str]:
    """The labels of a ``; ``-joined label text (a NULL attribute gives none)."""
    if not isinstance(text, str):
        return []
    return [l for l in text.split(LABEL_SEPARATOR) if l]


def latest_model(store: str) -> str | None:
    """The folder of the model that last wrote into ``store`` (its ``models`` table), if
    that folder still exists."""
    with read_store(store) as conn:
        rows = conn.execute("SELECT path FROM models ORDER BY registered DESC").fetchall()
    return next((r[0] for r in rows if r[0] and Path(r[0], "model.json").is_file()), None)


def model_thresholds(store: str) -> dict[str, float]:
    """Label -> decision threshold of the model that last wrote into ``store`` (0.5 for
    each label when its model.json gives none); empty when that model is not found."""
    folder = latest_model(store)
    if folder is None:
        return {}
    try:
        doc = json.loads(Path(folder, "model.json").read_text())
    except (OSError, ValueError):
        return {}
    labels = doc.get("labels") or []
    return dict(zip(labels, doc.get("thresholds") or [0.5] * len(labels)))


def tile_name(tile_id: str) -> str:
    """'row 3, column 7' from a tile id ending in ':<row>:<column>' (else the id)."""
    parts = tile_id.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return f"row {parts[1]}, column {parts[2]}"
    return tile_id
