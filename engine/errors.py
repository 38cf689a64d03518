"""Errors the engine raises for problems a user can fix.

Every :class:`TileLabelError` carries a message written for a GIS analyst: what is
wrong and what to do about it. The CLI prints it as one ``error: ...`` line and exits
with :attr:`TileLabelError.exit_code`; anything else is a bug and shows a traceback
only with ``--debug``.
"""
from __future__ import annotations


class TileLabelError(Exception):
    """A problem with the user's input, named together with its fix."""

    exit_code = 2


class RasterError(TileLabelError):
    """The raster cannot be read or does not suit the model."""


class ExtentError(TileLabelError):
    """The requested extent is empty, outside the raster or in an unknown CRS."""


class ModelFileError(TileLabelError):
    """A model directory is missing a file or its files disagree."""


class StoreError(TileLabelError):
    """The annotation store cannot be created, opened or written."""


class JobInterrupted(BaseException):
    """The job was asked to stop (Ctrl-C or SIGTERM); exit code 130.

    A BaseException, like KeyboardInterrupt: the signal handler raises it wherever the
    main thread is, and a library's ``except Exception`` (ONNX Runtime's session set-up,
    the exporter) must not swallow it and carry on."""

    exit_code = 130
