"""The folder a cluster's workers write attention pieces into: a path every worker sees
(the same machine, or a shared file system such as NFS) or an fsspec URL (``s3://``,
``gs://``, ``az://``, ``file://``, ...) the workers can write.

GDAL reads the pieces back through the VRT that joins them, so a URL must also be one
GDAL can read: its scheme maps to a GDAL virtual file system (``/vsis3/`` and so on).
Files for a URL are written locally first and then copied up in one piece (GeoTIFF
writing seeks; object stores do not).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.errors import StoreError

# URL schemes the workers can write (fsspec) and GDAL can read back (its virtual file
# systems); http(s) is read-only in fsspec, so it cannot be an attention folder.
GDAL_PREFIXES = {"file": "", "s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/",
                 "az": "/vsiaz/", "abfs": "/vsiaz/"}


def is_url(location: str) -> bool:
    return "://" in location


def join(folder: str, *names: str) -> str:
    if is_url(folder):
        return "/".join([folder.rstrip("/"), *names])
    return str(Path(folder).joinpath(*names))


def gdal_path(location: str) -> str:
    """The name GDAL opens ``location`` by."""
    if not is_url(location):
        return location
    scheme, rest = location.split("://", 1)
    return GDAL_PREFIXES[scheme] + ("/" + rest.lstrip("/") if scheme == "file" else rest)


def check_folder(folder: str) -> None:
    """Refuse a URL GDAL could not read the pieces back from, or that fsspec lacks."""
    if not is_url(folder):
        return
    scheme = folder.split("://", 1)[0]
    if scheme not in GDAL_PREFIXES:
        raise StoreError(f"--attention-dir {folder}: the workers cannot write {scheme}:// "
                         f"for GDAL to read back (use {', '.join(s + '://' for s in GDAL_PREFIXES)}"
                         ") or give a shared folder")
    try:
        import fsspec
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise StoreError(f"--attention-dir {folder}: fsspec cannot write {scheme}:// here "
                         f"({exc}); install its package (s3fs, gcsfs, adlfs) or give a shared "
                         "folder") from exc


def exists(location: str) -> bool:
    if not is_url(location):
        return Path(location).is_file()
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


@contextmanager
def local_file(location: str) -> Iterator[Path]:
    """A local path to write ``location`` through: the location itself for a folder (its
    parents made), else a temporary file copied to the URL when the block ends without
    an error."""
    if not is_url(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    import fsspec

    tmp = Path(tempfile.mkdtemp(prefix="tilelabel-piece-"))
    try:
        path = tmp / location.rsplit("/", 1)[-1]
        yield path
        fs, remote = fsspec.core.url_to_fs(location)
        fs.makedirs(os.path.dirname(remote), exist_ok=True)
        fs.put_file(str(path), remote)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
