"""Neuronpedia / attribution-graph-frontend JSON: export and graph files on disk.

:func:`to_neuronpedia_json` prunes the graph (or takes a
:class:`~tracewire.graph.pruning.PruneResult`) and builds the JSON document the frontend reads;
it validates against ``neuronpedia-graph-schema.json``, shipped with this package
(:func:`neuronpedia_schema`). Node ids are documented in ``neuronpedia_ids.py``. ``jsNodeId`` is
``"{layer}_{feature}-0"`` for features (shared across positions: the frontend's feature key) and
``"{node_id}-0"`` otherwise; ``is_target_logit`` marks the first target; ``influence`` is the
node's cumulative influence score (what the pruning slider filters on). Nodes that no kept edge
touches are left out, except embeddings and logits.

:func:`write_graph_files` writes ``{slug}.json`` (or ``.json.gz``) and updates
``graph-metadata.json``. :func:`from_neuronpedia_json` (in ``neuronpedia_import.py``, re-exported
here) reads such a file back; an imported, unmodified graph is written back as it came, without
pruning it again, so JSON → Graph → JSON is stable.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tracewire._version import __version__
from tracewire.atomic import atomic_write_bytes
from tracewire.errors import GraphFormatError
from tracewire.graph.graph import Graph
from tracewire.graph.metadata_listing import METADATA_FILE, update_graph_metadata
from tracewire.graph.neuronpedia_ids import (
    EMBEDDING_TYPE,
    ERROR_TYPE,
    FEATURE_TYPE,
    IMPORT_KEY,
    LOGIT_TYPE,
    SCHEMA_VERSION,
    cantor_pair,
    logit_clerp,
    neuronpedia_schema,
    node_ids,
    scan_name,
    target_vocab_ids,
)
from tracewire.graph.neuronpedia_import import from_neuronpedia_json
from tracewire.graph.pruning import PruneResult, prune_graph

__all__ = [
    "DEFAULT_Q_PARAMS",
    "METADATA_FILE",
    "dumps",
    "from_neuronpedia_json",
    "neuronpedia_schema",
    "to_neuronpedia_json",
    "update_graph_metadata",
    "write_graph_files",
]

logger = logging.getLogger(__name__)

DEFAULT_Q_PARAMS: dict[str, Any] = {
    "pinnedIds": [],
    "supernodes": [],
    "linkType": "both",
    "clickedId": "",
    "sg_pos": "",
}
#: ``generation_settings`` keys of the schema and the types it allows.
_GENERATION_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "max_n_logits": int,
    "desired_logit_prob": (int, float),
    "batch_size": int,
    "max_feature_nodes": int,
}
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def to_neuronpedia_json(
    graph: Graph,
    slug: str,
    *,
    prune: PruneResult | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    scan: str | Sequence[str] | None = None,
    feature_labels: Mapping[tuple[int, int], str] | None = None,
    q_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The graph as a Neuronpedia JSON document (a dict; see :func:`write_graph_files`).

    ``prune``: masks to use; by default the graph is pruned with ``node_threshold`` /
    ``edge_threshold`` (an imported, unmodified graph is written back as it came).
    ``scan``: the transcoder set name, or a list of transcoder ids (hashed, see
    :func:`scan_name`); by default ``graph.metadata["scan"]``, then ``"model_id"``.
    ``feature_labels``: clerps keyed by (layer, feature id). ``q_params``: frontend state
    (pinnedIds, supernodes, linkType, clickedId, sg_pos, and any extra keys, kept as given).
    Output is deterministic: the same graph and arguments give the same document.
    """
    _check_slug(slug)
    imported = _imported_info(graph)
    thresholds = (node_threshold, edge_threshold) if prune is None and imported is None else None
    if prune is None:
        prune = (
            _imported_prune(graph, imported)
            if imported
            else prune_graph(graph, node_threshold, edge_threshold)
        )
    _check_prune_result(graph, prune)
    scan_value = _scan_value(graph, scan, imported)
    labels = _feature_labels(feature_labels, imported)
    ids = node_ids(graph)

    edge_mask = prune.edge_mask & prune.node_mask[graph.edge_targets] & prune.node_mask[graph.edge_sources]
    kept_edges = torch.nonzero(edge_mask).flatten()
    touched = torch.zeros(graph.n_nodes, dtype=torch.bool)
    touched[graph.edge_targets[kept_edges]] = True
    touched[graph.edge_sources[kept_edges]] = True
    touched[graph.token_offset :] = True  # embeddings and logits always appear
    shown = torch.nonzero(prune.node_mask & touched).flatten().tolist()

    influence = prune.cumulative_scores.tolist()
    vocab_ids = target_vocab_ids(graph)
    nodes = [_node_json(graph, index, ids[index], influence[index], labels, vocab_ids) for index in shown]
    links = [
        {"source": ids[source], "target": ids[target], "weight": weight}
        for source, target, weight in zip(
            graph.edge_sources[kept_edges].tolist(),
            graph.edge_targets[kept_edges].tolist(),
            graph.edge_weights[kept_edges].tolist(),
        )
    ]
    metadata = _metadata(graph, slug, scan, scan_value, imported, thresholds, node_threshold)
    return {
        "metadata": metadata,
        "qParams": _q_params(q_params, imported),
        "nodes": nodes,
        "links": links,
    }


def dumps(document: Mapping[str, Any]) -> str:
    """Compact JSON text of a graph document (no indentation, no spaces, NaN refused)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_graph_files(
    graph: Graph,
    slug: str,
    out_dir: str | os.PathLike[str],
    *,
    gzip: bool = False,
    prune: PruneResult | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    scan: str | Sequence[str] | None = None,
    feature_labels: Mapping[tuple[int, int], str] | None = None,
    q_params: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{slug}.json`` (or ``{slug}.json.gz``) and update ``graph-metadata.json``; return the path.

    Both writes are atomic; the metadata entry with the same slug is replaced in place, others
    are kept. The gzip variant is byte-for-byte deterministic (no timestamp in the header).
    """
    document = to_neuronpedia_json(
        graph,
        slug,
        prune=prune,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        scan=scan,
        feature_labels=feature_labels,
        q_params=q_params,
    )
    data = dumps(document).encode("utf-8")
    directory = Path(out_dir)
    if gzip:
        path = atomic_write_bytes(directory / f"{slug}.json.gz", gzip_module.compress(data, mtime=0))
    else:
        path = atomic_write_bytes(directory / f"{slug}.json", data)
    update_graph_metadata(directory, document["metadata"])
    logger.info("wrote %s (%d nodes, %d links)", path, len(document["nodes"]), len(document["links"]))
    return path


def _check_slug(slug: str) -> None:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise GraphFormatError(
            f"slug {slug!r} cannot name a graph file: expected letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_prune_result(graph: Graph, prune: PruneResult) -> None:
    expected = {"node_mask": graph.n_nodes, "edge_mask": graph.n_edges, "cumulative_scores": graph.n_nodes}
    for name, size in expected.items():
        found = tuple(getattr(prune, name).shape)
        if found != (size,):
            raise GraphFormatError(f"prune.{name} has shape {found}; this graph needs ({size},)")


def _node_json(
    graph: Graph,
    index: int,
    node_id: str,
    influence: float,
    labels: Mapping[tuple[int, int], str],
    vocab_ids: Sequence[int],
) -> dict[str, Any]:
    influence_value = None if math.isnan(influence) else influence
    if index < graph.error_offset:
        layer, pos, feature = graph.features[index].tolist()
        activation = float(graph.activations[index])
        return _node(
            node_id,
            cantor_pair(layer, feature),
            str(layer),
            pos,
            FEATURE_TYPE,
            jsNodeId=f"{layer}_{feature}-0",
            clerp=labels.get((layer, feature), ""),
            influence=influence_value,
            activation=None if math.isnan(activation) else activation,
        )
    if index < graph.token_offset:
        layer, pos = divmod(index - graph.error_offset, graph.n_pos)
        return _node(node_id, -1, str(layer), pos, ERROR_TYPE, influence=influence_value)
    if index < graph.target_offset:
        pos = index - graph.token_offset
        return _node(node_id, pos, "E", pos, EMBEDDING_TYPE, influence=influence_value)
    k = index - graph.target_offset
    probability = float(graph.target_probabilities[k])
    return _node(
        node_id,
        vocab_ids[k],
        str(graph.n_layers + 1),
        graph.n_pos - 1,
        LOGIT_TYPE,
        token_prob=probability,
        is_target_logit=k == 0,
        clerp=logit_clerp(graph.target_labels[k], probability),
        influence=influence_value,
    )


def _node(
    node_id: str,
    feature: int,
    layer: str,
    ctx_idx: int,
    feature_type: str,
    *,
    token_prob: float = 0.0,
    is_target_logit: bool = False,
    jsNodeId: str | None = None,
    clerp: str = "",
    influence: float | None = None,
    activation: float | None = None,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": ctx_idx,
        "feature_type": feature_type,
        "token_prob": token_prob,
        "is_target_logit": is_target_logit,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": jsNodeId if jsNodeId is not None else f"{node_id}-0",
        "clerp": clerp,
        "influence": influence,
        "activation": activation,
    }


def _scan_value(graph: Graph, scan: str | Sequence[str] | None, imported: Mapping[str, Any] | None) -> Any:
    if scan is not None:
        return scan
    if imported is not None:
        return imported["metadata"].get("scan", "unknown")
    for key in ("scan", "transcoder_id", "model_id"):
        value = graph.metadata.get(key)
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
    return "unknown"


def _metadata(
    graph: Graph,
    slug: str,
    scan: str | Sequence[str] | None,
    scan_value: Any,
    imported: Mapping[str, Any] | None,
    thresholds: tuple[float, float] | None,
    node_threshold: float,
) -> dict[str, Any]:
    """The document's ``metadata``; ``thresholds`` is (node, edge) when this export pruned."""
    if imported is not None:
        # Written back as imported (same keys, same order), with what this graph says on top.
        metadata = dict(imported["metadata"])
        metadata.update(slug=slug, prompt_tokens=list(graph.token_strings), prompt=graph.prompt)
        if scan is not None or not isinstance(metadata.get("scan"), str):
            metadata["scan"] = scan_name(scan_value)
            metadata["transcoder_list"] = [] if isinstance(scan_value, str) else list(scan_value)
        return metadata
    metadata = {
        "slug": slug,
        "scan": scan_name(scan_value),
        "transcoder_list": [] if isinstance(scan_value, str) else list(scan_value),
        "prompt_tokens": list(graph.token_strings),
        "prompt": graph.prompt,
        "node_threshold": thresholds[0] if thresholds else node_threshold,
        "schema_version": SCHEMA_VERSION,
    }
    if thresholds:
        metadata["pruning_settings"] = {"node_threshold": thresholds[0], "edge_threshold": thresholds[1]}
    info: dict[str, Any] = {"generator": {"name": "tracewire", "version": __version__}}
    if isinstance(graph.metadata.get("description"), str):
        info["description"] = graph.metadata["description"]
    if isinstance(graph.metadata.get("create_time_ms"), int | float):  # never the clock: determinism
        info["create_time_ms"] = graph.metadata["create_time_ms"]
    metadata["info"] = info
    generation = _generation_settings(graph.metadata)
    if generation:
        metadata["generation_settings"] = generation
    if isinstance(graph.metadata.get("feature_details"), Mapping):
        metadata["feature_details"] = dict(graph.metadata["feature_details"])
    for key in ("vocab_size", "d_model"):  # let an import number custom targets and size vectors
        value = graph.metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            metadata[key] = value
    return metadata


def _generation_settings(graph_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``generation_settings`` from what ``attribute()`` recorded in ``metadata["settings"]``.

    Without a budget (``max_feature_nodes`` None) every active feature was a node: the schema
    wants an integer, so it is written as ``n_active_features`` (or left out if unknown). Values of
    the wrong type are left out rather than failing the schema.
    """
    settings = graph_metadata.get("settings")
    if not isinstance(settings, Mapping):
        return {}
    generation = {key: settings[key] for key in _GENERATION_SETTINGS if key in settings}
    if generation.get("max_feature_nodes", 0) is None:
        generation["max_feature_nodes"] = graph_metadata.get("n_active_features")
    return {
        key: value
        for key, value in generation.items()
        if isinstance(value, _GENERATION_SETTINGS[key]) and not isinstance(value, bool)
    }


def _q_params(q_params: Mapping[str, Any] | None, imported: Mapping[str, Any] | None) -> dict[str, Any]:
    if q_params is None and imported is not None and isinstance(imported.get("qParams"), Mapping):
        q_params = imported["qParams"]
    merged = dict(DEFAULT_Q_PARAMS)
    if q_params is not None:
        if not isinstance(q_params, Mapping):
            raise GraphFormatError(f"q_params is {type(q_params).__name__}; expected a mapping")
        merged.update(q_params)
    try:
        copied: dict[str, Any] = json.loads(json.dumps(merged, allow_nan=False))  # deep copy, surely JSON
    except (TypeError, ValueError) as exc:
        raise GraphFormatError(f"q_params is not JSON-serialisable ({exc})") from exc
    return copied


def _feature_labels(
    labels: Mapping[tuple[int, int], str] | None, imported: Mapping[str, Any] | None
) -> Mapping[tuple[int, int], str]:
    if labels is not None:
        return labels
    if imported is None:
        return {}
    parsed: dict[tuple[int, int], str] = {}
    for key, clerp in imported.get("clerps", {}).items():  # keys are "{layer}_{feature}"
        layer, feature = key.split("_")
        parsed[(int(layer), int(feature))] = clerp
    return parsed


def _imported_info(graph: Graph) -> Mapping[str, Any] | None:
    """The import record, if the graph still has the nodes and edges it was imported with."""
    info = graph.metadata.get(IMPORT_KEY)
    if not isinstance(info, Mapping):
        return None
    if info.get("n_nodes") != graph.n_nodes or info.get("n_edges") != graph.n_edges:
        return None
    return info


def _imported_prune(graph: Graph, info: Mapping[str, Any]) -> PruneResult:
    node_mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    scores = torch.full((graph.n_nodes,), math.nan, dtype=torch.float64)
    present = torch.tensor(info["nodes"], dtype=torch.long)
    node_mask[present] = True
    stored = [math.nan if value is None else value for value in info["influence"]]
    scores[present] = torch.tensor(stored, dtype=torch.float64)
    return PruneResult(node_mask, torch.ones(graph.n_edges, dtype=torch.bool), scores)
