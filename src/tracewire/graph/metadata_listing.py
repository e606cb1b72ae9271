"""``graph-metadata.json``: the list of graphs a frontend data directory offers.

``{"graphs": [<metadata of each graph>]}``; writing a graph inserts its entry or replaces the
entry with the same slug. The read-modify-write holds an advisory lock (POSIX) so two processes
writing graphs into one directory do not lose each other's entries, and the file is replaced
atomically so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import GraphFormatError

METADATA_FILE = "graph-metadata.json"


def update_graph_metadata(out_dir: str | os.PathLike[str], metadata: Mapping[str, Any]) -> Path:
    """Insert ``metadata`` into ``out_dir/graph-metadata.json``, replacing the entry with its slug."""
    directory = Path(out_dir)
    path = directory / METADATA_FILE
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / f".{METADATA_FILE}.lock"):
        listing = _read_metadata_listing(path)
        graphs: list[Any] = listing["graphs"]
        entry = dict(metadata)
        for position, existing in enumerate(graphs):
            if isinstance(existing, Mapping) and existing.get("slug") == entry.get("slug"):
                graphs[position] = entry
                break
        else:
            graphs.append(entry)
        text = json.dumps(listing, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        return atomic_write_bytes(path, text.encode("utf-8"))


def _read_metadata_listing(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"graphs": []}
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GraphFormatError(f'{path}: not valid JSON ({exc}); expected {{"graphs": [...]}}') from exc
    if not isinstance(listing, dict) or not isinstance(listing.get("graphs"), list):
        raise GraphFormatError(
            f"{path}: expected an object with a 'graphs' list, found {type(listing).__name__}"
        )
    return listing


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise read-modify-write of graph-metadata.json between processes (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic replace only, no lock
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
