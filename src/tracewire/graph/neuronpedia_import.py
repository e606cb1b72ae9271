"""Neuronpedia graph JSON → Graph.

What the JSON does not carry is lost: target vectors (zeros, width ``metadata["d_model"]`` when
the file gives it, else 0), token ids of positions without an embedding node (-1), activations of
non-feature nodes, the features and edges that pruning removed, and the unpruned influence. The
JSON-only information (its metadata, qParams, which nodes it listed, their cumulative influence
and clerps) is kept in ``graph.metadata["neuronpedia_import"]``, so the exporter can write an
unmodified imported graph back exactly as it came.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tracewire.errors import GraphFormatError, ResourceLimitError
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia_ids import (
    EMBEDDING_TYPE,
    IMPORT_KEY,
    LOGIT_CLERP,
    LOGIT_TYPE,
    cantor_unpair,
    embedding_token_id,
    feature_key,
)
from tracewire.limits import MAX_D_MODEL, MAX_LAYERS, bounded_count, read_maybe_gzip

MAX_JSON_BYTES = 256 * 1024 * 1024
"""Default cap on a graph JSON's size, compressed and decompressed."""
MAX_TARGET_VECTOR_VALUES = 1 << 26
"""Cap on ``n_targets * d_model`` (the zero target vectors an import allocates)."""


def from_neuronpedia_json(
    source: str | os.PathLike[str] | Mapping[str, Any], *, max_bytes: int = MAX_JSON_BYTES
) -> Graph:
    """A Graph from a Neuronpedia graph JSON (a path to ``.json`` / ``.json.gz``, or the parsed dict).

    See the module docstring for what the JSON cannot give back. Raises GraphFormatError naming
    the file and the node or link at fault for malformed input, including duplicate node ids
    (e.g. circuit-tracer's old colliding error ids).
    """
    document, name = _read_document(source, max_bytes)
    return _GraphBuilder(document, name).build()


def _read_document(
    source: str | os.PathLike[str] | Mapping[str, Any], max_bytes: int
) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "graph JSON"
    name = os.fspath(source)
    if not Path(name).exists():
        raise FileNotFoundError(f"graph file {name} does not exist")
    raw = read_maybe_gzip(name, max_bytes=max_bytes, decompressed_limit=max_bytes, error=GraphFormatError)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GraphFormatError(f"{name}: not a readable graph JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(document, Mapping):
        raise GraphFormatError(f"{name}: top level is {type(document).__name__}; expected an object")
    return document, name


@dataclass
class _Nodes:
    """The JSON's nodes sorted by kind; ``kinds[i]`` = (kind, index within that kind) of node i."""

    tokens: list[int]
    features: list[tuple[int, int, int]] = field(default_factory=list)
    activations: list[float] = field(default_factory=list)
    errors: list[tuple[int, int]] = field(default_factory=list)
    targets: list[tuple[int, float, str]] = field(default_factory=list)
    clerps: dict[str, str] = field(default_factory=dict)
    kinds: list[tuple[str, int]] = field(default_factory=list)
    influence: list[Any] = field(default_factory=list)
    logit_layers: set[int] = field(default_factory=set)
    top_layer: int = -1


class _GraphBuilder:
    """Turns the node and link lists back into tracewire's node order."""

    def __init__(self, document: Mapping[str, Any], name: str) -> None:
        self.name = name
        self.metadata = self._field(document, "metadata", Mapping)
        self.nodes = self._field(document, "nodes", list)
        self.links = self._field(document, "links", list)
        self.q_params = document.get("qParams")
        self.prompt_tokens = self._field(self.metadata, "prompt_tokens", list, "metadata.")
        self.vocab_size = self.metadata.get("vocab_size")

    def _field(self, mapping: Mapping[str, Any], key: str, kind: type, prefix: str = "") -> Any:
        value = mapping.get(key)
        if not isinstance(value, kind):
            raise GraphFormatError(
                f"{self.name}: field '{prefix}{key}' is {type(value).__name__}; expected {kind.__name__}"
            )
        return value

    def build(self) -> Graph:
        nodes = self._read_nodes()
        n_layers = self._n_layers(nodes)
        indices = self._node_indices(nodes, n_layers)
        edge_targets, edge_sources, edge_weights = self._edges(self._id_map(indices))
        n_pos, n_targets = len(self.prompt_tokens), len(nodes.targets)
        d_model = self._d_model(n_targets)
        graph_metadata: dict[str, Any] = {
            "source_format": "neuronpedia-json",
            "scan": self.metadata.get("scan"),
            IMPORT_KEY: {
                "metadata": dict(self.metadata),
                "qParams": self.q_params,
                "nodes": indices,
                "influence": [value if isinstance(value, int | float) else None for value in nodes.influence],
                "clerps": nodes.clerps,
                "n_nodes": len(nodes.features) + (n_layers + 1) * n_pos + n_targets,
                "n_edges": len(edge_weights),
            },
        }
        for key in ("vocab_size", "d_model"):
            if isinstance(self.metadata.get(key), int):
                graph_metadata[key] = self.metadata[key]
        return Graph(
            prompt=str(self.metadata.get("prompt", "")),
            tokens=torch.tensor(nodes.tokens, dtype=torch.long),
            token_strings=[str(token) for token in self.prompt_tokens],
            n_layers=n_layers,
            features=torch.tensor(nodes.features, dtype=torch.long).reshape(-1, 3),
            activations=_float_tensor(nodes.activations),
            target_labels=[label for _, _, label in nodes.targets],
            target_token_ids=torch.tensor([vocab for vocab, _, _ in nodes.targets], dtype=torch.long),
            target_probabilities=_float_tensor([prob for _, prob, _ in nodes.targets]),
            target_vectors=torch.zeros(n_targets, d_model),
            edge_targets=torch.tensor(edge_targets, dtype=torch.long),
            edge_sources=torch.tensor(edge_sources, dtype=torch.long),
            edge_weights=_float_tensor(edge_weights),
            metadata=graph_metadata,
        )

    def _d_model(self, n_targets: int) -> int:
        """``metadata.d_model`` (0 when absent), bounded before the zero target vectors are made."""
        value = self.metadata.get("d_model", 0)
        if not isinstance(value, int) or isinstance(value, bool):
            return 0
        d_model = bounded_count(value, name="metadata.d_model", where=self.name, limit=MAX_D_MODEL)
        if n_targets * d_model > MAX_TARGET_VECTOR_VALUES:
            raise ResourceLimitError(
                f"{self.name}: {n_targets} logit nodes x metadata.d_model={d_model} exceeds "
                f"{MAX_TARGET_VECTOR_VALUES} target-vector values; refused before allocating"
            )
        return d_model

    def _read_nodes(self) -> _Nodes:
        """Sort the JSON nodes by kind, in the order they appear."""
        n_pos = len(self.prompt_tokens)
        nodes = _Nodes(tokens=[-1] * n_pos)
        for number, node in enumerate(self.nodes):
            kind, pos = self._kind_and_pos(node, number, n_pos)
            nodes.influence.append(node.get("influence"))
            if kind == "token":
                nodes.tokens[pos] = self._token_id(node)
                nodes.kinds.append(("token", pos))
            elif kind == "target":
                nodes.logit_layers.add(self._int(node.get("layer"), number, "layer"))
                nodes.targets.append(self._target(node, number))
                nodes.kinds.append(("target", len(nodes.targets) - 1))
            elif kind == "error":
                layer = self._int(node.get("layer"), number, "layer")
                if layer < 0:
                    raise GraphFormatError(f"{self.name}: nodes[{number}] is an error node of layer {layer}")
                nodes.top_layer = max(nodes.top_layer, layer)
                nodes.errors.append((layer, pos))
                nodes.kinds.append(("error", len(nodes.errors) - 1))
            else:
                layer, feature = self._feature_key(node, number)
                nodes.top_layer = max(nodes.top_layer, layer)
                nodes.features.append((layer, pos, feature))
                activation = node.get("activation")
                nodes.activations.append(_number(activation, f"nodes[{number}].activation", self.name))
                if node.get("clerp"):
                    nodes.clerps[f"{layer}_{feature}"] = str(node["clerp"])
                nodes.kinds.append(("feature", len(nodes.features) - 1))
        return nodes

    def _n_layers(self, nodes: _Nodes) -> int:
        """Logits sit at layer n_layers + 1; without logits, one above the highest node layer."""
        n_layers = max(nodes.logit_layers) - 1 if nodes.logit_layers else nodes.top_layer + 1
        if n_layers > MAX_LAYERS:
            raise ResourceLimitError(
                f"{self.name}: node layers imply {n_layers} model layers; at most {MAX_LAYERS} are supported"
            )
        if len(nodes.logit_layers) > 1 or n_layers <= nodes.top_layer:
            raise GraphFormatError(
                f"{self.name}: logit nodes have layers {sorted(nodes.logit_layers)}; expected one layer "
                f"n_layers + 1 above every feature/error layer (highest {nodes.top_layer})"
            )
        return n_layers

    def _node_indices(self, nodes: _Nodes, n_layers: int) -> list[int]:
        """tracewire's node index of each JSON node; two JSON nodes may not share one."""
        n_pos = len(self.prompt_tokens)
        error_offset = len(nodes.features)
        token_offset = error_offset + n_layers * n_pos
        target_offset = token_offset + n_pos
        indices: list[int] = []
        for kind, position in nodes.kinds:
            if kind == "feature":
                indices.append(position)
            elif kind == "error":
                layer, pos = nodes.errors[position]
                indices.append(error_offset + layer * n_pos + pos)
            elif kind == "token":
                indices.append(token_offset + position)
            else:
                indices.append(target_offset + position)
        if len(set(indices)) != len(indices):
            seen: dict[int, int] = {}
            for number, index in enumerate(indices):
                if index in seen:
                    first, second = self.nodes[seen[index]].get("node_id"), self.nodes[number].get("node_id")
                    raise GraphFormatError(
                        f"{self.name}: nodes {first!r} and {second!r} are the same graph node "
                        "(same feature, error or token at the same position)"
                    )
                seen[index] = number
        return indices

    def _kind_and_pos(self, node: Any, number: int, n_pos: int) -> tuple[str, int]:
        if not isinstance(node, Mapping):
            raise GraphFormatError(
                f"{self.name}: nodes[{number}] is {type(node).__name__}; expected an object"
            )
        pos = self._int(node.get("ctx_idx"), number, "ctx_idx")
        if not 0 <= pos < n_pos:
            raise GraphFormatError(
                f"{self.name}: nodes[{number}] ({node.get('node_id')!r}) has ctx_idx {pos}; "
                f"expected 0..{n_pos - 1} (metadata.prompt_tokens has {n_pos} tokens)"
            )
        feature_type = str(node.get("feature_type", ""))
        if feature_type == EMBEDDING_TYPE:
            return "token", pos
        if feature_type == LOGIT_TYPE:
            return "target", pos
        if "error" in feature_type:
            return "error", pos
        return "feature", pos

    def _int(self, value: Any, number: int, key: str) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if abs(number) > _MAX_ID:
                raise ValueError
            return number
        except (TypeError, ValueError, OverflowError):
            raise GraphFormatError(
                f"{self.name}: nodes[{number}].{key} is {value!r}; expected an integer"
            ) from None

    def _token_id(self, node: Mapping[str, Any]) -> int:
        token_id = embedding_token_id(node.get("node_id", ""))
        return token_id if token_id is not None and 0 <= token_id <= _MAX_ID else -1

    def _feature_key(self, node: Mapping[str, Any], number: int) -> tuple[int, int]:
        """(layer, feature id) from the node id ``layer_feature_pos``, else by un-pairing ``feature``."""
        layer = self._int(node.get("layer"), number, "layer")
        key = feature_key(node.get("node_id", ""))
        if key is not None and key[0] == layer and 0 <= key[1] <= _MAX_ID:
            return key
        feature = node.get("feature")
        if isinstance(feature, int) and 0 <= feature <= _MAX_ID:
            paired_layer, feature_id = cantor_unpair(feature)
            if paired_layer == layer:
                return layer, feature_id
        raise GraphFormatError(
            f"{self.name}: nodes[{number}] ({node.get('node_id')!r}) is a feature whose id is neither "
            "'{layer}_{feature}_{pos}' nor Cantor-paired in 'feature'"
        )

    def _target(self, node: Mapping[str, Any], number: int) -> tuple[int, float, str]:
        vocab = self._int(node.get("feature"), number, "feature")
        if isinstance(self.vocab_size, int) and vocab >= self.vocab_size:
            vocab = -1  # custom target: a virtual id past the vocabulary
        probability = node.get("token_prob", 0.0)
        clerp = str(node.get("clerp", ""))
        match = LOGIT_CLERP.match(clerp)
        label = match.group("label") if match else clerp
        return vocab, _number(probability, f"nodes[{number}].token_prob", self.name), label

    def _id_map(self, indices: list[int]) -> dict[str, int]:
        id_to_index: dict[str, int] = {}
        for node, index in zip(self.nodes, indices):
            node_id = str(node.get("node_id"))
            if node_id in id_to_index:
                raise GraphFormatError(
                    f"{self.name}: node id {node_id!r} occurs twice, so links to it are ambiguous "
                    "(circuit-tracer before its fix of issue #78 gave error nodes ids '0_{layer}_{pos}' "
                    "that collide with features; re-export the graph with a newer version)"
                )
            id_to_index[node_id] = index
        return id_to_index

    def _edges(self, id_to_index: Mapping[str, int]) -> tuple[list[int], list[int], list[float]]:
        targets: list[int] = []
        sources: list[int] = []
        weights: list[float] = []
        for number, link in enumerate(self.links):
            if not isinstance(link, Mapping):
                raise GraphFormatError(
                    f"{self.name}: links[{number}] is {type(link).__name__}; expected an object"
                )
            for key, column in (("source", sources), ("target", targets)):
                node_id = link.get(key)
                if not isinstance(node_id, str) or node_id not in id_to_index:
                    raise GraphFormatError(
                        f"{self.name}: links[{number}].{key} is {node_id!r}; expected a node id from 'nodes'"
                    )
                column.append(id_to_index[node_id])
            weight = link.get("weight")
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                raise GraphFormatError(
                    f"{self.name}: links[{number}].weight is {weight!r}; expected a number"
                )
            weights.append(_number(weight, f"links[{number}].weight", self.name))
        return targets, sources, weights


_MAX_ID = 1 << 62
"""Largest integer (layer, position, feature or token id) an import accepts: fits int64."""


def _number(value: Any, where: str, name: str) -> float:
    """A JSON number as a finite float (absent or non-numeric: 0.0, as the exporter writes)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise GraphFormatError(f"{name}: {where} is {value!r}; expected a finite number")
    return number


def _float_tensor(values: list[float]) -> torch.Tensor:
    """float32 when that holds the JSON numbers exactly (tracewire's own exports), else float64."""
    exact = torch.tensor(values, dtype=torch.float64)
    single = exact.to(torch.float32)
    return single if torch.equal(single.double(), exact) else exact
