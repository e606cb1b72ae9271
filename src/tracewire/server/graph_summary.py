"""One line per graph file for the graph list, without loading whole graphs.

A ``.safetensors`` graph's prompt and sizes are in its header (tensor shapes are read, not
tensors). A JSON graph is described by its entry in ``graph-metadata.json`` when there is one
(written with every exported graph), else parsed when it is small, else named by its file name
and size only: listing a directory never parses a multi-gigabyte file. Summaries are cached per
file version.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from safetensors import safe_open

from tracewire.errors import GraphFormatError
from tracewire.graph.metadata_listing import METADATA_FILE
from tracewire.server.graph_files import GraphFile
from tracewire.server.graph_store import read_document

#: JSON graphs up to this size are parsed for their summary.
PARSE_LIMIT_BYTES = 16 * 1024 * 1024

_cache: dict[tuple[str, int, int], dict[str, Any]] = {}
_cache_lock = threading.Lock()


def summarize(file: GraphFile) -> dict[str, Any]:
    """A :class:`~tracewire.server.schemas.GraphSummary` dict; ``error`` says why a file is unreadable."""
    try:
        mtime, size = file.stamp()
    except OSError as exc:
        return _base(file, 0) | {"error": f"cannot stat: {exc.strerror or exc}"}
    key = (str(file.path), mtime, size)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    summary = _base(file, size)
    try:
        summary |= _tracewire(file) if file.kind == "tracewire" else _neuronpedia(file, size)
    except (GraphFormatError, OSError, ValueError, KeyError, TypeError) as exc:
        summary["error"] = str(exc)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        summary["error"] = f"{type(exc).__name__}: {exc}"
    with _cache_lock:
        _cache[key] = summary
    return summary


def _base(file: GraphFile, size: int) -> dict[str, Any]:
    return {"slug": file.slug, "kind": file.kind, "file": file.path.name, "size_bytes": size}


def _tracewire(file: GraphFile) -> dict[str, Any]:
    with safe_open(str(file.path), framework="pt") as reader:
        header = reader.metadata() or {}
        if header.get("format") != "tracewire-graph":
            raise GraphFormatError(f"{file.path.name}: not a tracewire graph")
        shapes = {
            name: reader.get_slice(name).get_shape()
            for name in ("features", "tokens", "target_token_ids", "edge_weights")
        }
    n_layers = int(json.loads(header["n_layers"]))
    n_pos = shapes["tokens"][0]
    metadata = json.loads(header.get("metadata", "{}"))
    scan = (metadata.get("scan") or metadata.get("transcoders")) if isinstance(metadata, dict) else None
    return {
        "prompt": json.loads(header["prompt"]),
        "scan": scan if isinstance(scan, str) else None,
        "n_nodes": shapes["features"][0] + (n_layers + 1) * n_pos + shapes["target_token_ids"][0],
        "n_edges": shapes["edge_weights"][0],
    }


def _neuronpedia(file: GraphFile, size: int) -> dict[str, Any]:
    listed = _listed(file)
    if listed is not None:
        return {"prompt": _text(listed.get("prompt")), "scan": _text(listed.get("scan"))}
    if size > PARSE_LIMIT_BYTES:
        return {}
    document = read_document(file)
    metadata = document["metadata"]
    return {
        "prompt": _text(metadata.get("prompt")),
        "scan": _text(metadata.get("scan")),
        "n_nodes": len(document["nodes"]),
        "n_edges": len(document["links"]),
    }


def _listed(file: GraphFile) -> dict[str, Any] | None:
    """The file's entry in ``graph-metadata.json`` (written next to exported graphs), if any."""
    listing_path = file.path.parent / METADATA_FILE
    if not listing_path.is_file():
        return None
    listing = json.loads(listing_path.read_text(encoding="utf-8"))
    for entry in listing.get("graphs", []) if isinstance(listing, dict) else []:
        if isinstance(entry, dict) and entry.get("slug") == file.slug:
            return entry
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
