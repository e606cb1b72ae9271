"""A graph as the UI reads it: Neuronpedia node dicts, and links as three index columns.

The Neuronpedia document repeats two node-id strings per link (``{"source": "12_3456_7", ...}``);
for 100k links that is most of the bytes and most of the browser's parse time. A view keeps the
nodes as Neuronpedia dicts (so the UI and the file format share one vocabulary) and the links as
columns of positions into the node list, which the UI reads into typed arrays. Links are sent in
pages (``links_json``), so a large graph never has to be one response.

Floats are written with 6 significant digits: more than a plot or a sorted list can show, and half
the bytes of Python's shortest round-trip repr.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracewire.errors import GraphFormatError
from tracewire.graph.neuronpedia_ids import EMBEDDING_TYPE, ERROR_TYPE, LOGIT_TYPE
from tracewire.graph.neuronpedia_ids import feature_key as node_feature_key

NODE_TYPES_ALWAYS_SHOWN = ("embedding", "logit")
_CHUNK = 2000


@dataclass
class GraphView:
    """Nodes (Neuronpedia dicts, in document order) and links as parallel columns."""

    metadata: dict[str, Any]
    q_params: dict[str, Any]
    nodes: list[dict[str, Any]]
    link_sources: list[int]
    link_targets: list[int]
    link_weights: list[float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_links(self) -> int:
        return len(self.link_weights)

    @classmethod
    def from_document(cls, document: Mapping[str, Any], name: str = "graph JSON") -> GraphView:
        """Split a Neuronpedia document; GraphFormatError names a link to an unknown node."""
        nodes = document.get("nodes")
        links = document.get("links")
        metadata = document.get("metadata")
        if not isinstance(nodes, list) or not isinstance(links, list) or not isinstance(metadata, Mapping):
            raise GraphFormatError(f"{name}: expected an object with 'metadata', 'nodes' and 'links'")
        position: dict[str, int] = {}
        for index, node in enumerate(nodes):
            if not isinstance(node, Mapping) or not isinstance(node.get("node_id"), str):
                raise GraphFormatError(f"{name}: node {index} has no string 'node_id'")
            position[node["node_id"]] = index
        sources: list[int] = []
        targets: list[int] = []
        weights: list[float] = []
        for index, link in enumerate(links):
            try:
                sources.append(position[link["source"]])
                targets.append(position[link["target"]])
                weights.append(float(link["weight"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise GraphFormatError(
                    f"{name}: link {index} is malformed or names an unknown node ({exc})"
                ) from None
        q_params = document.get("qParams")
        return cls(
            metadata=dict(metadata),
            q_params=dict(q_params) if isinstance(q_params, Mapping) else {},
            nodes=list(nodes),
            link_sources=sources,
            link_targets=targets,
            link_weights=weights,
        )

    def filtered(self, node_threshold: float, kept_ids: Collection[str] = ()) -> GraphView:
        """Nodes whose cumulative influence is at most ``node_threshold`` (the slider's rule).

        Embeddings and logits always stay, as do nodes without an influence value and the nodes
        named in ``kept_ids`` (pinned ones); links stay when both ends do.
        """
        keep = [
            node.get("feature_type") in NODE_TYPES_ALWAYS_SHOWN
            or not isinstance(node.get("influence"), int | float)
            or node["influence"] <= node_threshold
            or node.get("node_id") in kept_ids
            for node in self.nodes
        ]
        new_index: list[int] = []
        count = 0
        for kept in keep:
            new_index.append(count if kept else -1)
            count += kept
        columns: tuple[list[int], list[int], list[float]] = ([], [], [])
        for source, target, weight in zip(self.link_sources, self.link_targets, self.link_weights):
            if keep[source] and keep[target]:
                columns[0].append(new_index[source])
                columns[1].append(new_index[target])
                columns[2].append(weight)
        return GraphView(
            metadata=self.metadata,
            q_params=self.q_params,
            nodes=[node for node, kept in zip(self.nodes, keep) if kept],
            link_sources=columns[0],
            link_targets=columns[1],
            link_weights=columns[2],
            settings={**self.settings, "node_threshold": node_threshold},
        )

    def labelled_nodes(self, labels: Mapping[tuple[int, int], str]) -> list[dict[str, Any]]:
        """Nodes with feature labels from a feature store written into their ``clerp``."""
        if not labels:
            return self.nodes
        out = []
        for node in self.nodes:
            key = feature_key(node)
            label = labels.get(key) if key is not None else None
            out.append({**node, "clerp": label} if label else node)
        return out

    def links_json(self, offset: int, limit: int) -> str:
        """One page of links as JSON text: ``{"offset", "total", "source", "target", "weight"}``."""
        stop = min(self.n_links, offset + limit)
        sources = ",".join(map(str, self.link_sources[offset:stop]))
        targets = ",".join(map(str, self.link_targets[offset:stop]))
        weights = ",".join(format_float(weight) for weight in self.link_weights[offset:stop])
        return (
            f'{{"offset":{offset},"total":{self.n_links},"source":[{sources}],'
            f'"target":[{targets}],"weight":[{weights}]}}'
        )

    def links_binary(self, offset: int, limit: int) -> bytes:
        """One page of links as three little-endian columns: int32 sources, int32 targets, float32
        weights (12 bytes a link). The page reads them with no parsing into the typed arrays it
        keeps; JSON text of 700k links takes seconds to format here and to parse there."""
        stop = min(self.n_links, offset + limit)
        weights = self.link_weights[offset:stop]
        if not all(map(math.isfinite, weights)):  # as in the JSON page: a hand-edited NaN reads as 0
            weights = [weight if math.isfinite(weight) else 0.0 for weight in weights]
        columns = (
            array("i", self.link_sources[offset:stop]),
            array("i", self.link_targets[offset:stop]),
            array("f", weights),
        )
        if sys.byteorder == "big":
            for column in columns:
                column.byteswap()
        return b"".join(column.tobytes() for column in columns)

    def iter_document(self, labels: Mapping[tuple[int, int], str]) -> Iterator[str]:
        """The view as a Neuronpedia document, in chunks (for a streamed download)."""
        yield (
            '{"metadata":'
            + dumps_json(self.metadata)
            + ',"qParams":'
            + dumps_json(self.q_params)
            + ',"nodes":['
        )
        nodes = self.labelled_nodes(labels)
        for start in range(0, len(nodes), _CHUNK):
            prefix = "," if start else ""
            yield prefix + ",".join(dumps_json(node) for node in nodes[start : start + _CHUNK])
        yield '],"links":['
        ids = [node["node_id"] for node in self.nodes]
        for start in range(0, self.n_links, _CHUNK):
            stop = min(self.n_links, start + _CHUNK)
            parts = [
                '{"source":'
                + dumps_json(ids[self.link_sources[e]])
                + ',"target":'
                + dumps_json(ids[self.link_targets[e]])
                + ',"weight":'
                + format_float(self.link_weights[e])
                + "}"
                for e in range(start, stop)
            ]
            yield ("," if start else "") + ",".join(parts)
        yield "]}"


def feature_key(node: Mapping[str, Any]) -> tuple[int, int] | None:
    """(layer, feature index) of a feature node, read from its id ``"{layer}_{feature}_{pos}"``."""
    if node.get("feature_type") in (EMBEDDING_TYPE, LOGIT_TYPE, ERROR_TYPE):
        return None
    return node_feature_key(node.get("node_id", ""))


def format_float(value: float) -> str:
    """6 significant digits; always valid JSON (graphs hold finite weights)."""
    return f"{value:.6g}" if math.isfinite(value) else "0"


def dumps_json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or infinity read from a hand-edited file: JSON has no such numbers
        return json.dumps(finite_or_null(value), separators=(",", ":"), ensure_ascii=False)


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None (recursively), so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value
