"""Influence of every node on the targets, computed on the COO edge list.

The quantities of circuit-tracer §2.6 and the attribution-graph paper, without an ``N x N`` matrix:

- ``Â`` = row-normalised ``|A|`` (rows = targets): each node's incoming weights sum to 1, with the
  row sum floored at 1e-10 so nodes without inputs stay all-zero. Here ``Â`` is one value per edge.
- logit weights ``w``: target probabilities on target nodes, 0 elsewhere.
- influence ``I = wᵀ(Â + Â² + …) = wᵀ((1 − Â)⁻¹ − 1)``: the series terminates because the graph is a
  DAG, so it is summed term by term with sparse vector–matrix products ``v ← vᵀÂ`` (one
  ``index_add`` over the edges each) until ``v`` is exactly zero. The number of terms is the depth of
  the graph (about ``n_layers + 2``), not its size.
"""

from __future__ import annotations

import torch

from tracewire.errors import GraphFormatError
from tracewire.graph.graph import Graph

#: Row sums below this are treated as this (reference definition), so empty rows stay zero.
ROW_SUM_FLOOR = 1e-10
#: circuit-tracer's cap on the series; a real graph's depth is ~n_layers + 2.
DEFAULT_MAX_ITERATIONS = 1000
#: Graphs whose dense ``N × N`` ``Â`` fits in this many bytes propagate with dense products.
DENSE_PROPAGATION_BYTES = 64 * 2**20


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Influence is summed in float32 at least: half precision loses the small tail terms."""
    return dtype if dtype == torch.float64 else torch.float32


def normalized_abs_weights(edge_rows: torch.Tensor, weights: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Per-edge ``Â``: ``|a_e| / max(Σ_{edges into row(e)} |a|, 1e-10)``; ``edge_rows[e]`` is the
    node edge ``e`` points into (``Graph.edge_targets``)."""
    magnitudes = weights.abs().to(compute_dtype(weights.dtype))
    row_sums = torch.zeros(n_nodes, dtype=magnitudes.dtype).index_add_(0, edge_rows, magnitudes)
    return magnitudes / row_sums.clamp_min(ROW_SUM_FLOOR)[edge_rows]


def logit_weights(graph: Graph, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``w``: target probabilities on the target nodes, zero on every other node."""
    weights = torch.zeros(graph.n_nodes, dtype=dtype)
    weights[graph.target_offset :] = graph.target_probabilities.to(dtype)
    return weights


def propagate_influence(
    start: torch.Tensor,
    edge_rows: torch.Tensor,
    edge_sources: torch.Tensor,
    normalized: torch.Tensor,
    *,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    include_start: bool = False,
) -> torch.Tensor:
    """``startᵀ(Â + Â² + …)`` for ``Â`` given per edge; GraphFormatError if it never reaches zero.

    ``edge_rows`` / ``edge_sources``: each edge's row node (the node it points into) and source.
    ``include_start``: add ``start`` itself (the ``Â⁰`` term), as best-first selection does.

    A vector that is still non-zero after ``min(max_iterations, N + 1)`` products means a cycle
    (or a graph deeper than ``max_iterations``): the series would not terminate, and the graph is not the DAG
    an attribution graph must be.
    """
    n = start.numel()
    if n * n * start.element_size() <= DENSE_PROPAGATION_BYTES:
        return _propagate_dense(
            start, edge_rows, edge_sources, normalized, min(max_iterations, n + 1), include_start
        )
    total = start.clone() if include_start else torch.zeros_like(start)
    current = start
    # Termination is decided on the support, not the values: in a cycle whose weights decay,
    # values would underflow to zero and hide it. A DAG's longest path has at most N - 1 edges,
    # so N + 1 steps always suffice.
    active = start != 0
    edge_live = normalized != 0
    limit = min(max_iterations, start.numel() + 1)
    for _ in range(limit):
        edge_active = active[edge_rows] & edge_live
        if not bool(edge_active.any()):
            return total
        current = torch.zeros_like(start).index_add_(0, edge_sources, current[edge_rows] * normalized)
        total += current
        active = torch.zeros_like(active)
        active[edge_sources[edge_active]] = True
    raise _not_a_dag(active, limit)


def _propagate_dense(
    start: torch.Tensor,
    edge_rows: torch.Tensor,
    edge_sources: torch.Tensor,
    normalized: torch.Tensor,
    limit: int,
    include_start: bool,
) -> torch.Tensor:
    """:func:`propagate_influence` on a dense ``Â`` (few nodes: best-first selection propagates
    among the rows computed so far, ~2k nodes and ~2M edges at 16 tokens, where each sparse step
    gathered and scattered every edge). Each step is a vector–matrix product; the support is
    propagated alongside as a 0/1 product, so termination (and a cycle) is decided exactly as on
    the edge list."""
    n = start.numel()
    matrix = torch.zeros(n, n, dtype=start.dtype).index_put_(
        (edge_rows, edge_sources), normalized.to(start.dtype), accumulate=True
    )
    links = torch.zeros(n, n, dtype=start.dtype).index_put_(
        (edge_rows, edge_sources), (normalized != 0).to(start.dtype), accumulate=True
    )
    total = start.clone() if include_start else torch.zeros_like(start)
    current = start
    active = start != 0
    for _ in range(limit):
        reached = active.to(start.dtype) @ links
        if not bool((reached != 0).any()):
            return total
        current = current @ matrix
        total += current
        active = reached != 0
    raise _not_a_dag(active, limit)


def _not_a_dag(active: torch.Tensor, limit: int) -> GraphFormatError:
    still_active = torch.nonzero(active).flatten()[:10].tolist()
    return GraphFormatError(
        f"influence did not vanish after {limit} steps: the graph has a cycle (or is deeper than "
        f"{limit}); nodes still carrying influence include {still_active}; an attribution graph must "
        "be a DAG with edges from earlier to later nodes"
    )


def node_influence(graph: Graph, *, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> torch.Tensor:
    """Influence ``I = wᵀ(Â + Â² + …)`` of every node on the (probability-weighted) targets."""
    dtype = compute_dtype(graph.edge_weights.dtype)
    normalized = normalized_abs_weights(graph.edge_targets, graph.edge_weights, graph.n_nodes)
    return propagate_influence(
        logit_weights(graph, dtype),
        graph.edge_targets,
        graph.edge_sources,
        normalized,
        max_iterations=max_iterations,
    )
