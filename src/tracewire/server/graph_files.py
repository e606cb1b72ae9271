"""Which graph files a served directory offers, by slug; the only way a request reaches a file.

A request never names a path: it names a slug, and the slug is looked up in a table built by
listing the directory. So ``../``, encoded ``%2e%2e%2f``, absolute paths, NUL bytes or symlinks out
of the directory cannot make the server open anything else: the lookup fails and the answer is
404. Symlinks are followed only when they resolve inside the directory.

Files offered (top level of the directory only; names starting with "." are temporary files of
atomic writes and are skipped):

- ``NAME.safetensors``: a tracewire graph (pruned on request), slug ``NAME``;
- ``NAME.json`` / ``NAME.json.gz``: a Neuronpedia graph JSON, slug ``NAME``;
- ``graph-metadata.json`` is the listing written next to exported graphs, not a graph.

When two files share a stem (``a.safetensors`` and ``a.json``), the ``.safetensors`` one keeps the
slug ``a`` and the other is offered under its full file name (``a.json``).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tracewire.graph.metadata_listing import METADATA_FILE

GraphKind = Literal["tracewire", "neuronpedia"]
#: Suffixes in priority order (the first one claims a shared stem).
SUFFIXES: tuple[tuple[str, GraphKind], ...] = (
    (".safetensors", "tracewire"),
    (".json", "neuronpedia"),
    (".json.gz", "neuronpedia"),
)
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_SLUG = re.compile(SLUG_PATTERN)


@dataclass(frozen=True)
class GraphFile:
    """One servable graph file: its slug, absolute path and kind."""

    slug: str
    path: Path
    kind: GraphKind

    def stamp(self) -> tuple[int, int]:
        """(mtime_ns, size): changes when the file is rewritten, so caches know to reload."""
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size


class GraphDirectory:
    """The graph files of one directory, re-listed when asked (listing is cheap)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"graph directory {root} does not exist or is not a directory")
        self._lock = threading.Lock()
        self._files: dict[str, GraphFile] = {}

    def list(self) -> list[GraphFile]:
        """All servable graph files, sorted by slug (re-reads the directory)."""
        files: dict[str, GraphFile] = {}
        entries = sorted(self.root.iterdir(), key=lambda entry: entry.name)
        for suffix, kind in SUFFIXES:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name == METADATA_FILE or not name.endswith(suffix):
                    continue
                if suffix == ".json" and name.endswith(".json.gz"):
                    continue
                if not self._inside(entry):
                    continue
                stem = name[: -len(suffix)]
                slug = stem if stem not in files else name
                if _SLUG.match(slug) and slug not in files:
                    files[slug] = GraphFile(slug, entry, kind)
        with self._lock:
            self._files = files
        return [files[slug] for slug in sorted(files)]

    def find(self, slug: str) -> GraphFile | None:
        """The file of ``slug``, or None; never touches a path built from ``slug``."""
        if not isinstance(slug, str) or not _SLUG.match(slug):
            return None
        with self._lock:
            found = self._files.get(slug)
        if found is None or not found.path.exists():
            found = {file.slug: file for file in self.list()}.get(slug)
        return found

    def _inside(self, entry: Path) -> bool:
        """A regular file whose real path is inside the root (symlinks out are refused)."""
        try:
            real = entry.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return real.is_file() and real.is_relative_to(self.root)
