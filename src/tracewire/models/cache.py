"""tracewire's on-disk cache (``$TRACEWIRE_CACHE``, default ``~/.cache/tracewire``).

Converting a GGUF file (dequantising weights and, slowest, rebuilding the tokenizer) takes
~18 s for SmolLM2-135M; the same model saved as safetensors reloads in well under a second.
So every GGUF is converted once into ``models/<key>/`` and later loads read that folder.
Folders are written under a temporary name and renamed into place, so an interrupted
conversion never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("TRACEWIRE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tracewire"


def file_key(path: Path) -> str:
    """A cache key for a file: its name plus a digest of (absolute path, size, mtime)."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)
    return f"{stem}-{digest}"
