"""Node ids and names of the Neuronpedia graph JSON, unique by construction.

==================  ===================================  ==================================
node                ``node_id``                          ``feature``
==================  ===================================  ==================================
feature             ``"{layer}_{feature}_{pos}"``        Cantor pairing of (layer, feature)
error               ``"{layer}_-1_{pos}"``               -1
embedding (token)   ``"E_{token_id}_{pos}"``             pos
logit / target      ``"{n_layers+1}_{vocab_id}_{pos}"``  vocab_id
==================  ===================================  ==================================

Feature ids are never negative, so an error id cannot collide with a feature id. (circuit-tracer
used ``"0_{layer}_{pos}"`` for errors, which collides with feature ``layer`` of layer 0: its
issue #78.) Cantor pairing ``π(a, b) = (a + b)(a + b + 1)/2 + b`` with ``a = layer``,
``b = feature`` gives every (layer, feature) its own integer, as circuit-tracer's frontend expects.
A custom target (``target_token_ids == -1``) gets the virtual vocab id ``vocab_size + k`` (k = its
target index), with ``vocab_size`` from ``graph.metadata["vocab_size"]``. Logit nodes sit at the
last position.

This module is the one codec: ids are written by the ``*_node_id`` functions and read back by
:func:`feature_key` and :func:`embedding_token_id` (the importer and the server use these). The
explorer's ``featureKey`` in ``server/static/js/graph_data.js`` is the same rule as
:func:`feature_key` in JavaScript; change both together. A logit id has the shape of a feature
id, so a reader tells the two apart by ``feature_type`` first.

Node kinds, one row each: Python :class:`~tracewire.graph.graph.NodeKind` → JSON ``feature_type``
→ the explorer's ``KIND`` (``graph_data.js``):

==================  ===============================  ==================
``NodeKind``        ``feature_type``                 JS ``KIND``
==================  ===============================  ==================
``FEATURE`` (0)     ``"cross layer transcoder"``     ``FEATURE`` (0)
``ERROR`` (1)       ``"mlp reconstruction error"``   ``ERROR`` (1)
``TOKEN`` (2)       ``"embedding"``                  ``EMBEDDING`` (2)
``TARGET`` (3)      ``"logit"``                      ``LOGIT`` (3)
==================  ===============================  ==================

(``TOKEN``/``TARGET`` are tracewire's names for what the frontend calls embedding/logit nodes;
the numeric values agree.)
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from tracewire.errors import GraphFormatError
from tracewire.graph.graph import Graph

SCHEMA_VERSION = 1
FEATURE_TYPE = "cross layer transcoder"  # the frontend's name, used for per-layer transcoders too
ERROR_TYPE = "mlp reconstruction error"
EMBEDDING_TYPE = "embedding"
LOGIT_TYPE = "logit"
#: graph.metadata key under which an imported file's JSON-only information is kept.
IMPORT_KEY = "neuronpedia_import"
#: A logit node's clerp, ``Output "tok" (p=0.123)``; the label is recovered on import.
LOGIT_CLERP = re.compile(r'^Output "(?P<label>.*)" \(p=[^)]*\)$', re.DOTALL)


def logit_clerp(label: str, probability: float) -> str:
    return f'Output "{label}" (p={probability:.3f})'


def cantor_pair(a: int, b: int) -> int:
    """Cantor pairing ``(a + b)(a + b + 1)/2 + b``: a unique integer for each (a, b) ≥ 0."""
    return (a + b) * (a + b + 1) // 2 + b


def cantor_unpair(z: int) -> tuple[int, int]:
    """Inverse of :func:`cantor_pair`."""
    w = (math.isqrt(8 * z + 1) - 1) // 2
    b = z - w * (w + 1) // 2
    return w - b, b


def feature_node_id(layer: int, feature: int, pos: int) -> str:
    return f"{layer}_{feature}_{pos}"


def error_node_id(layer: int, pos: int) -> str:
    return f"{layer}_-1_{pos}"


def embedding_node_id(token_id: int, pos: int) -> str:
    return f"E_{token_id}_{pos}"


def logit_node_id(n_layers: int, vocab_id: int, pos: int) -> str:
    return f"{n_layers + 1}_{vocab_id}_{pos}"


def feature_key(node_id: object) -> tuple[int, int] | None:
    """``(layer, feature)`` of a feature id ``"{layer}_{feature}_{pos}"``, or None if ``node_id``
    does not have that shape (non-negative integers). Check ``feature_type`` first: a logit id
    ``"{n_layers+1}_{vocab_id}_{pos}"`` has the same shape."""
    parts = str(node_id).split("_")
    if len(parts) != 3:
        return None
    try:
        layer, feature = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return (layer, feature) if layer >= 0 and feature >= 0 else None


def embedding_token_id(node_id: object) -> int | None:
    """The token id of an embedding id ``"E_{token_id}_{pos}"``, or None for any other id."""
    parts = str(node_id).split("_")
    if len(parts) != 3 or parts[0] != "E":
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


def scan_name(scan: str | Sequence[str]) -> str:
    """The ``scan`` string: a name as is, a list of transcoder ids as ``custom-<sha256 prefix>``.

    circuit-tracer hashed the list with Python's ``hash()``, which changes between processes;
    a SHA-256 of the JSON list gives the same name on every machine and run.
    """
    if isinstance(scan, str):
        return scan
    digest = hashlib.sha256(json.dumps(list(scan), ensure_ascii=False).encode()).hexdigest()
    return f"custom-{digest[:16]}"


def neuronpedia_schema() -> dict[str, Any]:
    """The JSON schema (draft-07, condensed) of the graph files, shipped as package data."""
    text = importlib.resources.files("tracewire.graph").joinpath("neuronpedia-graph-schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def node_ids(graph: Graph) -> list[str]:
    """Neuronpedia node id of every node, in node order (see the module docstring)."""
    ids = [feature_node_id(layer, feature, pos) for layer, pos, feature in graph.features.tolist()]
    ids += [error_node_id(layer, pos) for layer in range(graph.n_layers) for pos in range(graph.n_pos)]
    ids += [embedding_node_id(token, pos) for pos, token in enumerate(graph.tokens.tolist())]
    last = graph.n_pos - 1
    ids += [logit_node_id(graph.n_layers, vocab, last) for vocab in target_vocab_ids(graph)]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for node in ids:
            if node in seen:
                raise GraphFormatError(
                    f"node id {node!r} occurs twice; the graph has duplicate features or targets"
                )
            seen.add(node)
    return ids


def target_vocab_ids(graph: Graph) -> list[int]:
    token_ids = graph.target_token_ids.tolist()
    if all(token >= 0 for token in token_ids):
        return token_ids
    vocab_size = graph.metadata.get("vocab_size")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise GraphFormatError(
            f"graph has custom targets (target_token_ids = -1) but metadata['vocab_size'] is {vocab_size!r}; "
            "expected the model's vocabulary size, which numbers custom targets vocab_size + k"
        )
    return [token if token >= 0 else vocab_size + k for k, token in enumerate(token_ids)]
