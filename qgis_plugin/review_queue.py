"""The order in which an analyst reviews tiles: least confident first.

A tile's confidence is how far its labels' probabilities are from their decision
thresholds: the smallest |p - threshold| over its labels. The queue holds the tiles still
``predicted`` (unreviewed), least confident first (ties: in the store's order); reviewed
tiles leave it. Read straight from the store (no engine needed).
"""
from __future__ import annotations

from .store_reader import label_columns, model_thresholds, read_store


def review_order(store: str) -> list[str]:
    """Tile ids of unreviewed tiles, least confident first."""
    columns = label_columns(store)
    thresholds = model_thresholds(store)
    limits = [thresholds.get(label, 0.5) for label, _ in columns]
    names = ", ".join(f'"{c}"' for _, c in columns)
    with read_store(store) as conn:
        rows = conn.execute(f"SELECT tile_id, {names} FROM tiles WHERE status = 'predicted' "
                            "ORDER BY fid").fetchall()
    margin = {r[0]: min(abs((p if p is not None else 0.0) - t) for p, t in zip(r[1:], limits))
              for r in rows}
    return sorted(margin, key=margin.__getitem__)  # sorted() is stable: store order on ties


def status_counts(store: str) -> dict[str, int]:
    with read_store(store) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall()
    return {"predicted": 0, "corrected": 0, "verified": 0} | dict(rows)
