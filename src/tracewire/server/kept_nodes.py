"""Pruning that keeps named nodes: a shared link or a saved state pins nodes that the default
pruning may drop, and the explorer must show them (the frontends' rule: pinned nodes survive).

The kept nodes are added to the pruned node set with every edge between them and a shown node;
the rest of the pruning result is unchanged, so a view without kept nodes is the plain one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch

from tracewire.graph.graph import Graph
from tracewire.graph.pruning import PruneResult


def parse_keep(text: str | None) -> tuple[str, ...]:
    """The ``keep`` query value (comma-separated node ids) as a sorted tuple without repeats."""
    if not text:
        return ()
    return tuple(sorted({part for part in text.split(",") if part}))


def keep_nodes(graph: Graph, result: PruneResult, indices: Sequence[int]) -> PruneResult:
    """``result`` with the nodes at ``indices`` shown, linked to every node the result shows."""
    if not indices:
        return result
    kept = torch.zeros_like(result.node_mask)
    kept[torch.as_tensor(list(indices), dtype=torch.long)] = True
    node_mask = result.node_mask | kept
    sources, targets = graph.edge_sources, graph.edge_targets
    touches_kept = kept[sources] | kept[targets]
    edge_mask = result.edge_mask | (touches_kept & node_mask[sources] & node_mask[targets])
    return PruneResult(node_mask, edge_mask, result.cumulative_scores)


def kept_positions(node_ids: Mapping[str, int], keep: Collection[str]) -> list[int]:
    """Positions of the ids in ``keep`` that exist; unknown ids are the client's to report."""
    return [node_ids[node] for node in keep if node in node_ids]
