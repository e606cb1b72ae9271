"""Best-first feature selection under a node budget.

With ``max_feature_nodes`` set, only the features most influential on the targets get their own
row. Influence is estimated from the rows computed so far, exactly as circuit-tracer does but on
a sparse matrix: row-normalise ``|A|`` (each row by the sum over *all* its sources), start from
the target weights, and push the vector back through the rows until it vanishes (the graph is a
DAG); the influence of a feature is the total mass that reaches it. Unvisited features are then
ranked by that estimate, and the estimate is refreshed every ``update_interval`` batches.
"""

from __future__ import annotations

import torch

MAX_ITERATIONS = 1024


def estimate_influence(
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    row_abs_sums: torch.Tensor,
    row_nodes: torch.Tensor,
    target_weights: torch.Tensor,
    target_nodes: torch.Tensor,
    n_nodes: int,
) -> torch.Tensor:
    """Influence of every node on the weighted targets, from the rows computed so far.

    ``rows/cols/values``: COO edges (node ids); ``row_abs_sums[i]`` normalises the row of
    ``row_nodes[i]``; ``target_weights`` sit on ``target_nodes``. Returns ``[n_nodes]`` float32.
    """
    position = torch.full((n_nodes,), -1, dtype=torch.long)
    position[row_nodes] = torch.arange(row_nodes.numel())
    row_pos = position[rows]
    weight = values.abs().float() / row_abs_sums[row_pos].float().clamp_min(1e-10)
    # Propagate only among nodes that have rows (edges whose source is itself a row), summing the
    # mass x_k that sits on rows at each step; then one pass over every edge distributes the
    # total: Σ_k x_kᵀ Â = (Σ_k x_k)ᵀ Â. One full pass instead of one per path length.
    col_pos = position[cols]
    inner = col_pos >= 0
    inner_rows, inner_cols, inner_weight = row_pos[inner], col_pos[inner], weight[inner]
    current = torch.zeros(row_nodes.numel())
    current[position[target_nodes]] = target_weights.float()
    total = current.clone()
    for _ in range(MAX_ITERATIONS):
        step = torch.zeros_like(current)
        step.index_add_(0, inner_cols, current[inner_rows] * inner_weight)
        if not bool(step.any()):
            break
        total += step
        current = step
    influence = torch.zeros(n_nodes)
    influence.index_add_(0, cols, total[row_pos] * weight)
    return influence
