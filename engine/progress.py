"""Job progress reporting: the JSON-lines job protocol or a human progress bar.

With ``--json-progress`` every event is one JSON object on its own stdout line and
nothing else is written to stdout (DESIGN.md, "Plugin and engine talk through a job
protocol")::

    {"event": "progress", "stage": "predict", "done": 12, "total": 480}
    {"event": "progress", "stage": "loading model", "done": 0, "total": null}
      (a stage of unknown length: the panel shows it as busy)
    {"event": "log", "level": "info", "message": "...", ...extra fields}
      (training adds "epoch_metrics": {"epoch", "loss", "loss_terms", "mAP_macro", "OF1", ...})
    {"event": "result", ...}
    {"event": "error", "message": "..."}

Without it, progress is a tqdm bar on stderr and logs are plain stderr lines.
"""
from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from tqdm import tqdm

from engine import interrupt


UNITS = {"predict": "tile", "train": "batch", "evaluate": "image"}


class Reporter:
    """Reports a job's progress, logs, result and errors."""

    def __init__(self, json_lines: bool = False, stream: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self._out = stream or sys.stdout
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def _emit(self, event: dict[str, Any]) -> None:
        self._out.write(json.dumps(event, default=str) + "\n")
        self._out.flush()

    def progress(self, stage: str, done: int, total: int | None) -> None:
        interrupt.raise_if_requested()  # every job's safe point to honour a stop request
        if self.json_lines:
            self._emit({"event": "progress", "stage": stage, "done": done, "total": total})
            return
        if self._bar is None or self._stage != stage:
            self.close()
            self._bar = tqdm(total=total, desc=stage, unit=UNITS.get(stage, "it"), file=sys.stderr,
                             dynamic_ncols=True)
            self._stage = stage
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def stage(self, name: str) -> None:
        """A stage whose length is not known (e.g. "loading model")."""
        interrupt.raise_if_requested()
        if self.json_lines:
            self._emit({"event": "progress", "stage": name, "done": 0, "total": None})
        else:
            self.close()
            print(f"{name}...", file=sys.stderr)

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """A log line; ``fields`` (e.g. ``epoch_metrics``) ride along in JSON mode."""
        if self.json_lines:
            self._emit({"event": "log", "level": level, "message": message, **fields})
        elif self._bar is not None:
            self._bar.write(f"{level}: {message}" if level != "info" else message, file=sys.stderr)
        else:
            print(f"{level}: {message}" if level != "info" else message, file=sys.stderr)

    def result(self, payload: dict[str, Any]) -> None:
        self.close()
        if self.json_lines:
            self._emit({"event": "result", **payload})

    def error(self, message: str, exit_code: int) -> None:
        self.close()
        if self.json_lines:
            self._emit({"event": "error", "message": message, "exit_code": exit_code})
        print(f"error: {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
