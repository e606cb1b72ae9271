"""Checks every reader runs before it trusts a file: sizes, regular files, finite numbers.

A small hostile or careless file must never make tracewire allocate gigabytes, hang, or load
NaNs that surface later far from their cause. Readers therefore check, *before* allocating:

- that a path is a regular file (a FIFO or device would block ``open``/``read`` forever);
- that every size a file declares (layers, ``d_model``, decompressed bytes) is within a sane
  bound (:class:`~tracewire.errors.ResourceLimitError` names the file, field and bound);
- that every float tensor loaded is finite (NaN/Inf raise the reader's own error class, naming
  the file and tensor).
"""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracewire.errors import ResourceLimitError, TracewireError

MAX_LAYERS = 1024
"""More layers than any model tracewire can load; a file declaring more is refused."""
MAX_D_MODEL = 1 << 16
"""Residual width bound for sizes read from files (the largest open models use 16k)."""
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
"""Default cap on what one ``.gz`` file may inflate to."""


def require_regular_file(
    path: str | os.PathLike[str], *, what: str = "file", error: type[TracewireError] = TracewireError
) -> Path:
    """``path`` if it is a regular file (symlinks followed); else ``error`` naming it.

    Opening a FIFO blocks until a writer appears, so ``is_file``-free readers hang on one.
    """
    checked = Path(path)
    try:
        mode = checked.stat().st_mode
    except FileNotFoundError:
        raise error(f"{checked}: {what} not found") from None
    except OSError as exc:
        raise error(f"{checked}: cannot read {what} ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise error(f"{checked}: {what} is not a regular file (a directory, FIFO or device)")
    return checked


def bounded_count(value: object, *, name: str, where: str, limit: int, minimum: int = 0) -> int:
    """``value`` as an int in ``[minimum, limit]``; a non-int is a format problem, a huge one a limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResourceLimitError(f"{where}: {name} is {value!r}; expected an integer")
    if value < minimum or value > limit:
        raise ResourceLimitError(
            f"{where}: {name} is {value}; expected {minimum}..{limit} (refused before allocating)"
        )
    return value


def check_finite(
    tensor: torch.Tensor | np.ndarray, *, where: str, error: type[TracewireError] = TracewireError
) -> None:
    """Raise ``error`` naming ``where`` if a float tensor holds NaN or +-Inf (ints pass)."""
    if isinstance(tensor, np.ndarray):
        if np.issubdtype(tensor.dtype, np.floating) and tensor.size and not bool(np.isfinite(tensor).all()):
            raise error(f"{where}: contains {_non_finite_note(int((~np.isfinite(tensor)).sum()))}")
        return
    if tensor.is_floating_point() and tensor.numel():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            raise error(f"{where}: contains {_non_finite_note(int((~finite).sum()))}")


def _non_finite_note(count: int) -> str:
    return f"{count} NaN or infinite value(s); expected finite numbers"


def gunzip_capped(
    data: bytes,
    *,
    where: str,
    limit: int = MAX_DECOMPRESSED_BYTES,
    error: type[TracewireError] = TracewireError,
) -> bytes:
    """Decompress gzip ``data`` (all members), refusing output beyond ``limit`` bytes.

    ``gzip.decompress`` inflates everything first; a 500 KB bomb becomes a gigabyte. Here output
    is produced in bounded steps and the limit is checked as it grows.
    """
    pieces: list[bytes] = []
    produced = 0
    remaining = data
    step = 1 << 22
    try:
        while remaining:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = remaining
            while not inflater.eof:
                piece = inflater.decompress(chunk, step)
                produced += len(piece)
                if produced > limit:
                    raise ResourceLimitError(
                        f"{where}: decompresses to more than {limit} bytes; refused (a compression bomb?)"
                    )
                pieces.append(piece)
                chunk = inflater.unconsumed_tail
                if not chunk and not piece:
                    break
            if not inflater.eof:
                raise error(f"{where}: truncated gzip data")
            remaining = inflater.unused_data.lstrip(b"\x00")
    except zlib.error as exc:
        raise error(f"{where}: not valid gzip data ({exc})") from exc
    return b"".join(pieces)


def read_json_object(
    path: str | os.PathLike[str], *, what: str, error: type[TracewireError] = TracewireError
) -> dict[str, Any]:
    """A regular file holding one JSON object; any other content raises ``error`` naming ``path``."""
    checked = require_regular_file(path, what=what, error=error)
    try:
        data = json.loads(checked.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{checked}: unreadable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{checked}: expected a JSON object, found {type(data).__name__}")
    return data


def read_maybe_gzip(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    error: type[TracewireError] = TracewireError,
    decompressed_limit: int = MAX_DECOMPRESSED_BYTES,
) -> bytes:
    """The bytes of a regular file (gunzipped with a cap when it starts with the gzip magic)."""
    checked = require_regular_file(path, error=error)
    size = checked.stat().st_size
    if size > max_bytes:
        raise ResourceLimitError(f"{checked}: {size} bytes exceeds the limit of {max_bytes} bytes")
    raw = checked.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return gunzip_capped(raw, where=str(checked), limit=decompressed_limit, error=error)
    return raw


__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "MAX_D_MODEL",
    "MAX_LAYERS",
    "bounded_count",
    "check_finite",
    "gunzip_capped",
    "read_json_object",
    "read_maybe_gzip",
    "require_regular_file",
]
