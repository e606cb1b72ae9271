"""Dense reference implementations of influence, pruning and scores (tests only, small graphs).

They follow the written definitions literally with ``N x N`` matrices and a matrix inverse,
so the sparse library code can be checked against an independent formulation.
"""

from __future__ import annotations

import torch

from tests.graph.factory import dense_adjacency
from tracewire.graph.graph import Graph


def normalize(matrix: torch.Tensor) -> torch.Tensor:
    magnitudes = matrix.abs()
    return magnitudes / magnitudes.sum(dim=1, keepdim=True).clamp_min(1e-10)


def logit_weights(graph: Graph) -> torch.Tensor:
    weights = torch.zeros(graph.n_nodes, dtype=torch.float64)
    weights[graph.target_offset :] = graph.target_probabilities.double()
    return weights


def influence(normalized: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``wᵀ((1 − Â)⁻¹ − 1)``."""
    identity = torch.eye(normalized.shape[0], dtype=normalized.dtype)
    return weights @ (torch.linalg.inv(identity - normalized) - identity)


def threshold(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    ranked = torch.sort(scores.flatten(), descending=True).values
    cumulative = torch.cumsum(ranked, 0) / ranked.sum()
    position = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)))
    return ranked[min(position, ranked.numel() - 1)]


def prune(
    graph: Graph, node_fraction: float, edge_fraction: float, *, tie_rtol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node mask [N], edge mask over the graph's edge list [E], cumulative scores [N]).

    ``tie_rtol``: scores within this relative distance below a threshold count as equal to it.
    The definitions tie structurally (a node with one input and one output gives both edges the
    score ``I'`` of that node; a token whose only output is one feature has its influence), and
    the matrix inverse breaks such ties by rounding where the sparse code keeps them exact; a
    tolerance of ~1e-9 makes the reference keep the whole tie, as exact arithmetic would.
    """
    adjacency = dense_adjacency(graph)
    exists = adjacency != 0
    weights = logit_weights(graph)
    node_influence = influence(normalize(adjacency), weights)
    node_mask = node_influence >= threshold(node_influence, node_fraction) * (1 - tie_rtol)
    node_mask[graph.token_offset :] = True

    pruned = adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    normalized = normalize(pruned)
    pruned_influence = influence(normalized, weights) + weights
    edge_scores = normalized * pruned_influence[:, None]
    edge_mask = (edge_scores >= threshold(edge_scores[exists], edge_fraction) * (1 - tie_rtol)) & exists

    while True:
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        updated = node_mask.clone()
        updated[: graph.token_offset] &= edge_mask[:, : graph.token_offset].any(0)
        updated[: graph.n_features] &= edge_mask[: graph.n_features].any(1)
        if torch.equal(updated, node_mask):
            break
        node_mask = updated

    ranked, order = torch.sort(node_influence, descending=True, stable=True)
    cumulative = torch.empty_like(node_influence)
    cumulative[order] = torch.cumsum(ranked, 0) / ranked.sum()
    return node_mask, edge_mask[graph.edge_targets, graph.edge_sources], cumulative


def scores_of(adjacency: torch.Tensor, graph: Graph) -> tuple[float, float]:
    """(replacement, completeness) of a dense adjacency laid out like ``graph``."""
    normalized = normalize(adjacency)
    weights = logit_weights(graph)
    node_influence = influence(normalized, weights)
    tokens = node_influence[graph.token_offset : graph.target_offset].sum()
    errors = node_influence[graph.error_offset : graph.token_offset].sum()
    non_error = 1 - normalized[:, graph.error_offset : graph.token_offset].sum(1)
    output = node_influence + weights
    return float(tokens / (tokens + errors)), float((non_error * output).sum() / output.sum())


def folded_adjacency(graph: Graph, keep_feature: torch.Tensor) -> torch.Tensor:
    """Dense adjacency with removed features' outgoing edges moved to their error nodes."""
    adjacency = dense_adjacency(graph)
    for feature in torch.nonzero(~keep_feature).flatten().tolist():
        layer, pos, _ = graph.features[feature].tolist()
        error = graph.error_index(layer, pos)
        adjacency[:, error] += adjacency[:, feature]
        adjacency[:, feature] = 0
        adjacency[feature, :] = 0
    return adjacency
