"""A stop request (SIGTERM, Ctrl-C) that cannot be lost.

The CLI's signal handler raises JobInterrupted wherever the main thread is. Python drops
an exception raised while it runs a finaliser (``__del__``, a weakref callback) with only
an "Exception ignored" line on stderr, and a library may catch BaseException, so the raise
alone can be lost: in one test run a SIGTERM 0.7 s into an annotate job let the job run to
its end and exit 0. The request is therefore also recorded here; every job checks it at
each progress step (``Reporter.progress``) and the CLI checks it before reporting success.
"""
from __future__ import annotations

from engine.errors import JobInterrupted

_reason: str | None = None


def request(reason: str) -> None:
    """Record that the job was asked to stop."""
    global _reason
    _reason = reason


def clear() -> None:
    """Forget a request (a new job starts in this process)."""
    global _reason
    _reason = None


def requested() -> str | None:
    """Why the job was asked to stop, or None."""
    return _reason


def raise_if_requested() -> None:
    """Raise JobInterrupted if a stop was requested, e.g. after a swallowed raise."""
    if _reason is not None:
        raise JobInterrupted(_reason)
