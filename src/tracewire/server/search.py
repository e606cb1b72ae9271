"""Search features across every graph of the served directory and the feature store.

A query matches a feature by its label (the store's, else the graph's clerp), by its id (a node id
``"3_412_5"``, ``"3_412"`` or ``"L3/412"``) or by the prompt token it is active on in a graph. The
answer is one row per feature with the graphs where it survives the default pruning (where it is
influential) and its node there, most influential first, so the explorer can jump to the node.

Each graph's entries are read once from its default view and kept while the file is unchanged
(its modification time and size), so a search over a directory costs a scan of small lists.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from tracewire.errors import GraphFormatError
from tracewire.server.context import ServerContext
from tracewire.server.graph_files import GraphFile
from tracewire.server.graph_view import feature_key

_ID_PATTERN = re.compile(r"^\s*(?:l(?:ayer)?\s*)?(\d+)\s*[_/#: ]\s*#?(\d+)(?:_(\d+))?\s*$", re.IGNORECASE)
MAX_RESULTS = 200


@dataclass(frozen=True)
class Entry:
    """One feature node of a graph's default view."""

    layer: int
    feature: int
    node_id: str
    token: str
    clerp: str
    influence: float | None


class SearchIndex:
    """Per-graph entries, cached by file path and stamp; safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, int], list[Entry]]] = {}

    def entries(self, context: ServerContext, file: GraphFile) -> list[Entry]:
        stamp = file.stamp()
        with self._lock:
            cached = self._entries.get(str(file.path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        view = context.graphs.get(file).view(None, None)
        tokens = [str(token) for token in view.metadata.get("prompt_tokens") or []]
        entries = []
        for node in view.nodes:
            key = feature_key(node)
            if key is None or "error" in str(node.get("feature_type", "")):
                continue
            position = int(node.get("ctx_idx") or 0)
            influence = node.get("influence")
            entries.append(
                Entry(
                    layer=key[0],
                    feature=key[1],
                    node_id=str(node["node_id"]),
                    token=tokens[position] if position < len(tokens) else "",
                    clerp=str(node.get("clerp") or ""),
                    influence=float(influence) if isinstance(influence, int | float) else None,
                )
            )
        with self._lock:
            self._entries[str(file.path)] = (stamp, entries)
        return entries


def search(context: ServerContext, index: SearchIndex, query: str, limit: int) -> dict[str, Any]:
    """Rows ``{layer, feature, label, match, graphs: [{slug, node_id, token, influence}]}``."""
    text = query.strip().lower()
    if not text:
        raise HTTPException(422, "empty search: give a label, a feature id (3_412) or a token")
    id_match = _ID_PATTERN.match(text)
    wanted_id = (int(id_match.group(1)), int(id_match.group(2))) if id_match else None
    labels = context.features.labels() if context.features is not None else {}
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    skipped: list[str] = []

    def row(key: tuple[int, int], label: str, match: str) -> dict[str, Any]:
        found = rows.get(key)
        if found is None:
            found = rows[key] = {
                "layer": key[0],
                "feature": key[1],
                "label": label,
                "match": match,
                "graphs": [],
            }
        return found

    for file in context.directory.list():
        try:
            entries = index.entries(context, file)
        except (HTTPException, GraphFormatError, OSError) as exc:
            skipped.append(f"{file.path.name}: {getattr(exc, 'detail', exc)}")
            continue
        for entry in entries:
            key = (entry.layer, entry.feature)
            label = labels.get(key) or entry.clerp
            match = _match(text, wanted_id, key, entry, label)
            if match is None:
                continue
            found = row(key, label, match)
            found["graphs"].append(
                {
                    "slug": file.slug,
                    "node_id": entry.node_id,
                    "token": entry.token,
                    "influence": entry.influence,
                }
            )
    for key, label in labels.items():  # labelled features of the store that no graph shows
        if key not in rows and (text in label.lower() or key == wanted_id):
            row(key, label, "id" if key == wanted_id else "label")
    results = sorted(rows.values(), key=_rank)[:limit]
    for result in results:
        result["graphs"] = _best_node_per_graph(result["graphs"])
    return {"query": query, "results": results, "n_matches": len(rows), "skipped": skipped}


def _match(
    text: str, wanted_id: tuple[int, int] | None, key: tuple[int, int], entry: Entry, label: str
) -> str | None:
    if key == wanted_id or text == entry.node_id.lower():
        return "id"
    if label and text in label.lower():
        return "label"
    if entry.token and text == entry.token.strip().lower():
        return "token"
    return None


def _rank(row: dict[str, Any]) -> tuple[int, float, int, int]:
    """Id matches first, then label, then token; then by the best influence (smallest cumulative)."""
    order = {"id": 0, "label": 1, "token": 2}[row["match"]]
    influences = [g["influence"] for g in row["graphs"] if g["influence"] is not None]
    return order, min(influences, default=2.0), row["layer"], row["feature"]


def _best_node_per_graph(graphs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One node per graph: the feature's most influential position there (a jump target)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in graphs:
        current = best.get(entry["slug"])
        score = entry["influence"] if entry["influence"] is not None else 2.0
        if current is None or score < (current["influence"] if current["influence"] is not None else 2.0):
            best[entry["slug"]] = entry
    return sorted(best.values(), key=lambda e: e["influence"] if e["influence"] is not None else 2.0)
