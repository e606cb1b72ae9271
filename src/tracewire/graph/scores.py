"""Replacement and completeness scores of a graph and of node subsets (circuit-tracer §2.7).

- replacement = ``Σ_tokens I / (Σ_tokens I + Σ_errors I)``: the share of end-to-end influence that
  reaches the targets from the prompt rather than from reconstruction errors;
- completeness = ``Σ_i (1 − Σ_{j∈errors} Â_ij)(I_i + w_i) / Σ_i (I_i + w_i)``: the influence-weighted
  share of each node's normalised input that does not come from error nodes.

Subgraph scores (landscape post, Appendix C; what Neuronpedia shows for a pinned subgraph):
feature nodes outside the subset are removed, and each removed feature's OUTGOING edges are
re-attributed to the error node at the feature's own (layer, position); ``(t ← s)`` becomes
``(t ← err(layer_s, pos_s))``, summed with the edge that error node already has into ``t``. Its
incoming edges vanish with it. Tokens, errors and targets are always present.

:class:`ScoreContext` precomputes, once per graph, the grouping of every edge under "all features
folded into errors", so one subset costs a few ``O(E)`` vector operations and no sort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.graph.influence import (
    DEFAULT_MAX_ITERATIONS,
    compute_dtype,
    logit_weights,
    normalized_abs_weights,
    propagate_influence,
)


@dataclass(frozen=True)
class Scores:
    """Replacement and completeness, both in [0, 1] (NaN when the graph has no influence at all)."""

    replacement: float
    completeness: float


class ScoreContext:
    """Per-graph precomputation for fast repeated :meth:`subgraph_scores` calls.

    Edges are split by their source: edges out of a kept feature keep their identity (a (target,
    feature) pair cannot collide with anything), every other edge belongs to a "folded group"
    ``(target, error-or-token source)`` computed once with ``torch.unique``. A subset then only
    sums the weights of its folded edges per group.
    """

    def __init__(self, graph: Graph, *, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> None:
        self.graph = graph
        self.max_iterations = max_iterations
        self.n_nodes = graph.n_nodes
        self.n_features = graph.n_features
        self.error_offset = graph.error_offset
        self.token_offset = graph.token_offset
        self.edge_rows = graph.edge_targets
        self.sources = graph.edge_sources
        self.weights = graph.edge_weights.to(compute_dtype(graph.edge_weights.dtype))
        self.logit_weights = logit_weights(graph, self.weights.dtype)
        self.source_is_feature = self.sources < self.n_features
        folded_sources = self.sources.clone()
        if self.n_features:
            feature_error = graph.feature_error_indices()
            folded_sources[self.source_is_feature] = feature_error[self.sources[self.source_is_feature]]
        keys = self.edge_rows * self.n_nodes + folded_sources
        unique_keys, self.edge_group = torch.unique(keys, return_inverse=True)
        self.group_rows = unique_keys // self.n_nodes
        self.group_sources = unique_keys % self.n_nodes
        self.n_groups = int(unique_keys.shape[0])

    def graph_scores(self) -> Scores:
        """Scores of the whole graph, no folding."""
        return self._scores(self.edge_rows, self.sources, self.weights)

    def subgraph_scores(self, node_subset: torch.Tensor | Sequence[int]) -> Scores:
        """Scores with every feature outside ``node_subset`` folded into its error node.

        ``node_subset``: a bool mask over all N nodes (or over the F features), or node indices.
        Only feature membership matters: tokens, errors and targets are always present.
        """
        keep_feature = self._feature_mask(node_subset)
        keep_node = torch.ones(self.n_nodes, dtype=torch.bool)
        keep_node[: self.n_features] = keep_feature
        row_present = keep_node[self.edge_rows]
        own_edges = self.source_is_feature & keep_node[self.sources] & row_present
        folded_edges = ~(self.source_is_feature & keep_node[self.sources]) & row_present
        groups = self.edge_group[folded_edges]
        group_weights = torch.zeros(self.n_groups, dtype=self.weights.dtype).index_add_(
            0, groups, self.weights[folded_edges]
        )
        group_present = torch.zeros(self.n_groups, dtype=torch.bool)
        group_present[groups] = True
        edge_rows = torch.cat([self.edge_rows[own_edges], self.group_rows[group_present]])
        sources = torch.cat([self.sources[own_edges], self.group_sources[group_present]])
        weights = torch.cat([self.weights[own_edges], group_weights[group_present]])
        return self._scores(edge_rows, sources, weights)

    def _feature_mask(self, node_subset: torch.Tensor | Sequence[int]) -> torch.Tensor:
        subset = torch.as_tensor(node_subset)
        if subset.dtype == torch.bool:
            if subset.shape not in ((self.n_nodes,), (self.n_features,)):
                raise InvalidArgumentError(
                    f"node_subset mask has shape {tuple(subset.shape)}; "
                    f"expected ({self.n_nodes},) over all nodes "
                    f"or ({self.n_features},) over features"
                )
            return subset[: self.n_features].clone()
        indices = subset.flatten().long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.n_nodes):
            raise InvalidArgumentError(
                f"node_subset has indices {int(indices.min())}..{int(indices.max())}; "
                f"expected 0..{self.n_nodes - 1}"
            )
        mask = torch.zeros(self.n_features, dtype=torch.bool)
        mask[indices[indices < self.n_features]] = True
        return mask

    def _scores(self, edge_rows: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor) -> Scores:
        normalized = normalized_abs_weights(edge_rows, weights, self.n_nodes)
        influence = propagate_influence(
            self.logit_weights, edge_rows, sources, normalized, max_iterations=self.max_iterations
        )
        token_influence = influence[self.token_offset : self.token_offset + self.graph.n_tokens].sum()
        error_influence = influence[self.error_offset : self.token_offset].sum()
        from_errors = (sources >= self.error_offset) & (sources < self.token_offset)
        error_share = torch.zeros(self.n_nodes, dtype=normalized.dtype).index_add_(
            0, edge_rows[from_errors], normalized[from_errors]
        )
        output_influence = influence + self.logit_weights
        completeness = ((1.0 - error_share) * output_influence).sum() / output_influence.sum()
        replacement = token_influence / (token_influence + error_influence)
        return Scores(replacement=float(replacement), completeness=float(completeness))


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (a score of a graph without
    edges is 0/0): JSON has no NaN, and None says "undefined" where 0 would be a wrong score."""
    return float(value) if math.isfinite(value) else None


def graph_scores(graph: Graph | ScoreContext) -> Scores:
    """Replacement and completeness of the full (unpruned) graph."""
    context = graph if isinstance(graph, ScoreContext) else ScoreContext(graph)
    return context.graph_scores()


def subgraph_scores(graph: Graph | ScoreContext, node_subset: torch.Tensor | Sequence[int]) -> Scores:
    """Scores with features outside ``node_subset`` folded into errors (see module doc).

    Pass a :class:`ScoreContext` instead of the graph when scoring many subsets of one graph.
    """
    context = graph if isinstance(graph, ScoreContext) else ScoreContext(graph)
    return context.subgraph_scores(node_subset)
