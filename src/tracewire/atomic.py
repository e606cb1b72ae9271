"""Atomic file and directory writes: the one place tracewire puts files on disk.

A graph, checkpoint, corpus manifest or transcoder file that is half written (crash, full disk,
Ctrl-C, kill -9) is worse than no file: a reader would report a corrupt file the user never asked
for, or worse, load it. So every writer in tracewire goes through this module: it writes a
temporary sibling in the destination's directory (same filesystem, so the rename is atomic),
flushes it to disk, and only then renames it over the destination. Readers see either the old
file or the new one, whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]


def _fsync_file(path: str) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def atomic_write_with(path: PathLike, write: Callable[[str], None], *, mode: int | None = None) -> Path:
    """Call ``write(temp_path)`` to produce the file, then rename it over ``path``.

    For writers that insist on a file name of their own (``np.save``, ``savefig``, safetensors'
    ``save_file``). The file gets ``mode`` if given, else the replaced file's mode, else 0644
    (``mkstemp`` creates 0600 files; graphs, weights and stores are meant to be shared).
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        if mode is None:
            mode = destination.stat().st_mode & 0o777 if destination.exists() else 0o644
        write(temp_name)
        os.chmod(temp_name, mode)
        _fsync_file(temp_name)
        os.replace(temp_name, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return destination


def atomic_write_bytes(path: PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one, whole."""

    def write(temp_name: str) -> None:
        with open(temp_name, "wb") as stream:
            stream.write(data)

    return atomic_write_with(path, write, mode=mode)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text, atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, *, indent: int | None = 1, **dumps: Any) -> Path:
    """``json.dumps(data)`` written atomically (extra keyword arguments go to ``json.dumps``)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps))


def atomic_directory(final: Path, build: Callable[[Path], None]) -> Path:
    """Create the directory ``final`` by calling ``build(tmp_dir)`` and renaming the result into place.

    If another process created ``final`` meanwhile, its result is kept and ours discarded. Use
    :func:`replace_directory` to swap a new build in over an existing directory.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def replace_directory(final: Path, build: Callable[[Path], None]) -> Path:
    """Build a directory in a temporary sibling, then swap it in for ``final`` (old one removed).

    Until the swap the previous ``final`` stays whole, so a killed rebuild never destroys the last
    good output; after it readers see only the new build. (Two renames: the old directory is moved
    aside first, since ``rename`` cannot replace a non-empty directory.)
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.new.", dir=final.parent))
    tmp.chmod(0o755)
    old: Path | None = None
    try:
        build(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old, final)
            old = None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final
