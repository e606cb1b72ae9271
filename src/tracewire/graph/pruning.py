"""Pruning by cumulative influence (circuit-tracer §2.6), on the sparse edge list.

The result equals the reference's dense formulas (``N x N`` matrices, a sort of all ``N²`` edge
scores) but costs ``O(E · depth)``: influence is a few sparse products (see ``influence.py``),
and the thresholds avoid sorting every edge (see ``threshold.py``).

Steps of :func:`prune_graph`:

1. ``I = wᵀ(Â + Â² + …)``; keep nodes with ``I ≥ find_threshold(I, node_threshold)``; tokens and
   targets are always kept.
2. Drop edges touching removed nodes → ``A'``; re-normalise → ``Â'``;
   ``I' = wᵀ(Â' + Â'² + …) + w``; edge score ``S = Â'_ij · I'_i`` (i = the edge's target);
   keep edges with ``S ≥ find_threshold(S, edge_threshold)``.
3. Fixpoint: remove feature and error nodes without a kept outgoing edge and feature nodes
   without a kept incoming edge, drop their edges, repeat until nothing changes.

One deliberate difference from circuit-tracer: the returned edge mask never keeps an edge whose
endpoint was removed (circuit-tracer's dense mask can, when a threshold comes out as 0).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.graph.influence import (
    compute_dtype,
    logit_weights,
    node_influence,
    normalized_abs_weights,
    propagate_influence,
)
from tracewire.graph.threshold import find_threshold

__all__ = ["PruneResult", "cumulative_scores", "find_threshold", "keep_all", "prune_graph", "subgraph"]


@dataclass(frozen=True)
class PruneResult:
    """Which nodes and edges survive pruning, and each node's cumulative influence score.

    ``node_mask``: bool ``[N]``; ``edge_mask``: bool ``[E]`` aligned with the graph's edge list;
    ``cumulative_scores``: ``[N]``, the fraction of total influence covered by nodes ranked at or
    above this one. The last is what Neuronpedia's pruning slider filters on (written as the
    node's ``influence`` in the JSON).
    """

    node_mask: torch.Tensor
    edge_mask: torch.Tensor
    cumulative_scores: torch.Tensor


def cumulative_scores(influence: torch.Tensor) -> torch.Tensor:
    """Per node, the cumulative fraction of total influence at its rank (ties: index order)."""
    ranked, order = torch.sort(influence, descending=True, stable=True)
    total = ranked.sum(dtype=torch.float64)
    if bool(total > 0):
        cumulative = torch.cumsum(ranked, dim=0, dtype=torch.float64) / total
    else:
        cumulative = torch.ones_like(ranked, dtype=torch.float64)
    result = torch.empty_like(influence)
    result[order] = cumulative.to(influence.dtype)
    return result


def prune_graph(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """Node and edge masks keeping the given cumulative fractions of influence (see module doc)."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise InvalidArgumentError(f"{name}={value}; expected a fraction in [0, 1]")
    n_nodes = graph.n_nodes
    edge_rows, sources = graph.edge_targets, graph.edge_sources
    dtype = compute_dtype(graph.edge_weights.dtype)
    weights_w = logit_weights(graph, dtype)

    influence = node_influence(graph)
    node_mask = influence >= find_threshold(influence, node_threshold)
    node_mask[graph.token_offset :] = True

    alive = node_mask[edge_rows] & node_mask[sources]
    pruned_weights = torch.where(alive, graph.edge_weights, torch.zeros((), dtype=graph.edge_weights.dtype))
    normalized = normalized_abs_weights(edge_rows, pruned_weights, n_nodes)
    pruned_influence = propagate_influence(weights_w, edge_rows, sources, normalized) + weights_w
    edge_scores = normalized * pruned_influence[edge_rows]
    edge_mask = alive & (edge_scores >= find_threshold(edge_scores, edge_threshold))

    node_mask, edge_mask = _remove_dangling(graph, node_mask, edge_mask)
    return PruneResult(node_mask, edge_mask, cumulative_scores(influence))


def _remove_dangling(
    graph: Graph, node_mask: torch.Tensor, edge_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixpoint: features/errors need a kept outgoing edge, features a kept incoming edge."""
    n_nodes, n_features, token_offset = graph.n_nodes, graph.n_features, graph.token_offset
    edge_rows, sources = graph.edge_targets, graph.edge_sources
    node_mask = node_mask.clone()
    while True:
        edge_mask = edge_mask & node_mask[edge_rows] & node_mask[sources]
        has_outgoing = torch.zeros(n_nodes, dtype=torch.bool)
        has_outgoing[sources[edge_mask]] = True
        has_incoming = torch.zeros(n_nodes, dtype=torch.bool)
        has_incoming[edge_rows[edge_mask]] = True
        updated = node_mask.clone()
        updated[:token_offset] &= has_outgoing[:token_offset]
        updated[:n_features] &= has_incoming[:n_features]
        if torch.equal(updated, node_mask):
            return node_mask, edge_mask
        node_mask = updated


def keep_all(graph: Graph) -> PruneResult:
    """A PruneResult that keeps every node and edge (for exporting an already-pruned graph)."""
    return PruneResult(
        node_mask=torch.ones(graph.n_nodes, dtype=torch.bool),
        edge_mask=torch.ones(graph.n_edges, dtype=torch.bool),
        cumulative_scores=cumulative_scores(node_influence(graph)),
    )


def subgraph(graph: Graph, result: PruneResult) -> Graph:
    """The graph restricted to kept features and kept edges.

    Error, token and target nodes keep their fixed slots (the index layout needs all of them);
    removed error nodes simply have no edges left. Features are renumbered in their original
    order; ``metadata["pruned_from"]`` records the original feature and edge counts.
    """
    if result.node_mask.shape != (graph.n_nodes,) or result.edge_mask.shape != (graph.n_edges,):
        raise InvalidArgumentError(
            f"PruneResult masks have shapes {tuple(result.node_mask.shape)} / "
            f"{tuple(result.edge_mask.shape)}; "
            f"this graph needs ({graph.n_nodes},) / ({graph.n_edges},)"
        )
    kept_features = result.node_mask[: graph.n_features]
    removed = graph.n_features - int(kept_features.sum())
    new_index = torch.arange(graph.n_nodes) - removed
    new_index[: graph.n_features] = torch.cumsum(kept_features.long(), dim=0) - 1
    edge_mask = result.edge_mask & result.node_mask[graph.edge_targets] & result.node_mask[graph.edge_sources]
    metadata = dict(graph.metadata)
    metadata["pruned_from"] = {"n_features": graph.n_features, "n_edges": graph.n_edges}
    return replace(
        graph,
        features=graph.features[kept_features],
        activations=graph.activations[kept_features],
        edge_targets=new_index[graph.edge_targets[edge_mask]],
        edge_sources=new_index[graph.edge_sources[edge_mask]],
        edge_weights=graph.edge_weights[edge_mask],
        metadata=metadata,
    )
