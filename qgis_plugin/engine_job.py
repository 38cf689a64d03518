"""Running engine jobs as child processes (DESIGN.md, the job protocol).

``<engine python> -m engine.cli <job> ... --json-progress`` prints one JSON event per
stdout line: progress, log, result, error. :class:`EngineJob` wraps one job in a QgsTask
(progress in QGIS's task bar, cancellable); :func:`run_engine` runs one synchronously
(Processing algorithms, quick store edits). A crash of native ML code takes down only
the child process, never QGIS.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

LOG_TAG = "TileLabel"


@dataclass
class JobOutcome:
    """What a finished job produced: its result event, or an error message."""

    result: dict | None = None
    error: str | None = None
    cancelled: bool = False
    logs: list[dict] = field(default_factory=list)
    exit_code: int | None = None


def job_command(python: str, job: list[str]) -> list[str]:
    return [python, "-m", "engine.cli", *job, "--json-progress"]


def _start(python: str, job: list[str]) -> subprocess.Popen:
    """Start the job; stderr goes to a temporary file (a pipe nobody reads while stdout
    is being read would block a chatty engine forever)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # QGIS's own paths must not leak into the engine's Python
    stderr = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(job_command(python, job), stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=env)
    proc.stderr_file = stderr
    return proc


def _stderr_tail(proc: subprocess.Popen) -> str:
    handle = proc.stderr_file
    handle.seek(0)
    lines = [ln for ln in handle.read().strip().splitlines() if ln.strip()]
    handle.close()
    return lines[-1] if lines else "no message"


_TERMINATE_LOCK = threading.Lock()


def terminate_once(proc: subprocess.Popen, outcome: JobOutcome) -> None:
    """Send the job one SIGTERM (the engine then stops cleanly and exits with 130)."""
    with _TERMINATE_LOCK:
        if outcome.cancelled:
            return
        outcome.cancelled = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def _consume(proc: subprocess.Popen, outcome: JobOutcome,
             on_event: Callable[[dict], None], is_cancelled: Callable[[], bool]) -> None:
    for line in proc.stdout:
        if is_cancelled():
            terminate_once(proc, outcome)
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "result":
            outcome.result = {k: v for k, v in event.items() if k != "event"}
        elif event.get("event") == "error":
            outcome.error = event.get("message", "engine error")
        elif event.get("event") == "log":
            outcome.logs.append(event)
        on_event(event)
    proc.stdout.close()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    outcome.exit_code = proc.returncode
    last_error_line = _stderr_tail(proc)
    if outcome.cancelled and outcome.error and "interrupted" in outcome.error:
        outcome.error = None
    # exit code 3 comes with a result: some of several rasters failed, the rest is done
    if proc.returncode not in (0, 130) and outcome.result is None and not outcome.error \
            and not outcome.cancelled:
        outcome.error = (f"the engine stopped unexpectedly (exit code {proc.returncode}): "
                         f"{last_error_line}")


def run_engine(python: str, job: list[str], on_event: Callable[[dict], None] = lambda e: None,
               is_cancelled: Callable[[], bool] = lambda: False) -> JobOutcome:
    """Run one job to the end in this thread."""
    outcome = JobOutcome()
    try:
        proc = _start(python, job)
    except OSError as exc:
        outcome.error = f"cannot start the engine ({python}): {exc}"
        return outcome
    _consume(proc, outcome, on_event, is_cancelled)
    return outcome


class JobSignals(QObject):
    """Signals a task emits towards the main thread (queued across threads)."""

    event = pyqtSignal(dict)
    done = pyqtSignal(object)  # JobOutcome


class EngineJob(QgsTask):
    """One engine job as a cancellable QgsTask; ``signals.done`` fires on the main thread."""

    def __init__(self, description: str, python: str, job: list[str]) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.python, self.job = python, job
        self.signals = JobSignals()
        self.outcome = JobOutcome()
        self._proc: subprocess.Popen | None = None

    def run(self) -> bool:
        try:
            self._proc = _start(self.python, self.job)
        except OSError as exc:
            self.outcome.error = f"cannot start the engine ({self.python}): {exc}"
            return False
        _consume(self._proc, self.outcome, self._on_event, self.isCanceled)
        return self.outcome.error is None and not self.outcome.cancelled

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "progress" and event.get("total"):
            self.setProgress(100.0 * event["done"] / event["total"])
        self.signals.event.emit(event)

    def cancel(self) -> None:
        if self._proc is not None:
            terminate_once(self._proc, self.outcome)
        super().cancel()

    def finished(self, ok: bool) -> None:  # main thread
        if self.isCanceled():
            self.outcome.cancelled = True
        if self.outcome.error:
            QgsMessageLog.logMessage(f"{self.description()}: {self.outcome.error}", LOG_TAG,
                                     Qgis.Critical)
        self.signals.done.emit(self.outcome)
