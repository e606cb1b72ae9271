"""Best-first feature selection under a node budget.

With ``max_feature_nodes`` set, only the features most influential on the targets get their own
row. Influence is estimated from the rows computed so far, exactly as circuit-tracer does but on
a sparse matrix: row-normalise ``|A|`` (each row by the sum over *all* its sources), start from
the target weights, and push the vector back through the rows until it vanishes (the graph is a
DAG); the influence of a feature is the total mass that reaches it. Unvisited features are then
ranked by that estimate, and the estimate is refreshed every ``update_interval`` batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

MAX_ITERATIONS = 1024


def estimate_influence(
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
    row_nodes: torch.Tensor,
    target_weights: torch.Tensor,
    target_nodes: torch.Tensor,
    n_nodes: int,
) -> torch.Tensor:
    """Influence of every node on the weighted targets, from the rows computed so far.

    ``batches()``: yields, per computed batch, ``(row_positions, cols, weights)`` where
    ``row_positions`` index ``row_nodes`` and ``weights`` are the row-normalised ``|A|``; it is
    called twice, so batches can be materialised one at a time. Target weights sit on
    ``target_nodes``. Returns ``[n_nodes]`` float32. Nothing the size of all edges is built.
    """
    position = torch.full((n_nodes,), -1, dtype=torch.long)
    position[row_nodes] = torch.arange(row_nodes.numel())
    # Propagate only among nodes that have rows (edges whose source is itself a row), summing the
    # mass x_k that sits on rows at each step; then one pass over every edge distributes the
    # total: Σ_k x_kᵀ Â = (Σ_k x_k)ᵀ Â. One full pass instead of one per path length.
    inner = []
    for rows, cols, weight in batches():
        col_pos = position[cols]
        keep = col_pos >= 0
        inner.append((rows[keep], col_pos[keep], weight[keep]))
    inner_rows = torch.cat([r for r, _, _ in inner])
    inner_cols = torch.cat([c for _, c, _ in inner])
    inner_weight = torch.cat([w for _, _, w in inner])
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
    for rows, cols, weight in batches():
        influence.index_add_(0, cols, total[rows] * weight)
    return influence
