"""Atomic file writes shared by the graph writers.

A graph file or ``graph-metadata.json`` that is half written (crash, full disk, Ctrl-C) is worse
than no file: a reader would report a corrupt graph that the user never asked for. So every writer
here writes a temporary file in the destination's directory (same filesystem, so the rename is
atomic), flushes it to disk and only then renames it over the destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one, whole."""
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    try:
        # mkstemp creates the file 0600; a graph is meant to be served and shared, so keep the
        # destination's mode when replacing a file and use the usual 0644 for a new one.
        mode = destination.stat().st_mode & 0o777 if destination.exists() else 0o644
        os.chmod(temp_name, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return destination
