"""One writing job per store: an exclusive lock held for the whole of an annotate job.

GeoPackage has one writer at a time, and two jobs creating the same new store would
race (one job's tiles going into a file the other replaces). The lock is an OS file
lock (``flock``; ``msvcrt.locking`` on Windows) on a small hidden file beside the store,
``.<store name>.lock``, which the OS releases when the process ends, however it ends:
a killed job never leaves a store locked. The file itself stays (removing a lock file
safely is not possible while another process may be opening it).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from engine.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def lock_path(store: Path) -> Path:
    return Path(store).with_name(f".{Path(store).name}.lock")


class StoreJobLock:
    """``with StoreJobLock(store):`` refuses at once (StoreError) when another job holds it."""

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.fd: int | None = None

    def __enter__(self) -> "StoreJobLock":
        path = lock_path(self.store)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write the store {self.store}: {exc.strerror} "
                             f"({path.parent}); choose a writable folder for --out") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"another TileLabel job is writing to {self.store}; wait for it "
                             "to finish (or cancel it), then run this one again") from exc
        self.fd = fd
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
