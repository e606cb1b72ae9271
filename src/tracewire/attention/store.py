"""The optional attention section of a graph file.

- head loadings: tensors ``attention.loadings.{targets,sources,direct,heads}`` in ``Graph.sections``
  (saved next to the graph's own tensors in the same ``.safetensors`` file);
- QK attributions: JSON summaries (``QKAttribution.to_json``) in ``metadata["attention"]["qk"]``.

Both name nodes by their graph index, so both record the graph they were computed for
(``metadata["attention"]["graph"]``: feature, node and edge counts and the edges' |weight| sum).
A graph derived afterwards (pruned, coalesced, re-imported) no longer matches: its section is
*stale*, reported as absent rather than misread. Older tracewire versions ignore the section.
"""

from __future__ import annotations

import logging
from typing import Any

from tracewire.attention.loadings import HeadLoadings
from tracewire.attention.qk import QKAttribution
from tracewire.graph.graph import Graph

log = logging.getLogger(__name__)

KEY = "attention"
RULE = "last-head"


def fingerprint(graph: Graph) -> dict[str, Any]:
    return {
        "n_features": graph.n_features,
        "n_nodes": graph.n_nodes,
        "n_edges": graph.n_edges,
        "edge_abs_sum": float(graph.edge_weights.double().abs().sum()),
    }


def _section(graph: Graph, *, create: bool = False) -> dict[str, Any] | None:
    section = graph.metadata.get(KEY)
    if isinstance(section, dict) and section.get("graph") != fingerprint(graph):
        log.warning("the attention section of this graph was computed for another graph; ignoring it")
        section = None
        if create:
            graph.metadata.pop(KEY, None)
            # a new dict: graphs made by dataclasses.replace share their parent's sections dict
            graph.sections = {k: v for k, v in graph.sections.items() if not k.startswith(f"{KEY}.")}
    if section is None and create:
        section = {"graph": fingerprint(graph)}
        graph.metadata[KEY] = section
    return section if isinstance(section, dict) else None


def store_loadings(graph: Graph, loadings: HeadLoadings) -> None:
    """Keep ``loadings`` with ``graph`` (saved by ``graph.save``); replaces earlier loadings."""
    section = _section(graph, create=True)
    assert section is not None
    graph.sections = {**graph.sections, **loadings.sections()}  # never mutate a shared dict
    section["loadings"] = {"rule": RULE, "n_edges": int(loadings.targets.numel())}


def stored_loadings(graph: Graph) -> HeadLoadings | None:
    """The head loadings stored with ``graph`` (``None``: none, or stale)."""
    if _section(graph) is None:
        return None
    return HeadLoadings.from_sections(graph.sections)


def store_qk(graph: Graph, results: list[QKAttribution], *, n_pairs: int = 20, n_marginals: int = 20) -> None:
    """Keep QK summaries with ``graph``; one per (layer, head, query, key), newest wins."""
    section = _section(graph, create=True)
    assert section is not None
    merged = {_qk_key(entry): entry for entry in section.get("qk", [])}
    for result in results:
        entry = result.to_json(n_pairs=n_pairs, n_marginals=n_marginals)
        merged[_qk_key(entry)] = entry
    section["qk"] = list(merged.values())


def stored_qk(graph: Graph) -> list[dict[str, Any]]:
    """The QK summaries stored with ``graph`` (empty: none, or stale)."""
    section = _section(graph)
    return list(section.get("qk", [])) if section is not None else []


def _qk_key(entry: dict[str, Any]) -> tuple[int, int, int, int]:
    return int(entry["layer"]), int(entry["head"]), int(entry["query"]), int(entry["key"])
