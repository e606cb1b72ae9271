"""Best-first feature selection under a node budget.

With ``max_feature_nodes`` set, only the features most influential on the targets get their own
row. Influence is estimated from the rows computed so far, exactly as circuit-tracer does but on
a sparse matrix: row-normalise ``|A|`` (each row by the sum over *all* its sources), start from
the target weights, and push the vector back through the rows until it vanishes (the graph is a
DAG; the propagation is :func:`tracewire.graph.influence.propagate_influence`, the one used on
finished graphs); the influence of a feature is the total mass that reaches it. Unvisited features are then
ranked by that estimate, and the estimate is refreshed every ``update_interval`` batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from tracewire.graph.influence import propagate_influence


@dataclass
class WeightBlock:
    """Row-normalised ``|A|`` of some rows, dense or COO.

    Dense: ``rows [R]`` (positions in ``row_nodes``), ``cols [n]`` shared by every row,
    ``weights [R, n]`` the rows' raw edge values and ``row_norm [R]`` each row's ``Σ|A|``:
    ``Â = |weights| / row_norm`` is never materialised (influence only needs the columns that
    are rows, and one product per block). COO: ``rows``, ``cols`` and ``weights`` (already
    ``Â``) are parallel ``[E]``; ``row_norm`` is ``None``.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor
    row_norm: torch.Tensor | None = None

    @property
    def dense(self) -> bool:
        return self.weights.ndim == 2


def estimate_influence(
    blocks: Callable[[], Iterable[WeightBlock]],
    row_nodes: torch.Tensor,
    target_weights: torch.Tensor,
    target_nodes: torch.Tensor,
    n_nodes: int,
) -> torch.Tensor:
    """Influence of every node on the weighted targets, from the rows computed so far.

    ``blocks()``: yields the row-normalised ``|A|`` of the rows computed so far, a batch at a
    time; it is called twice, so blocks can be materialised one at a time. Target weights sit on
    ``target_nodes``. Returns ``[n_nodes]`` float32. Nothing the size of all edges is built.
    """
    position = torch.full((n_nodes,), -1, dtype=torch.long)
    position[row_nodes] = torch.arange(row_nodes.numel())
    # Propagate only among nodes that have rows (edges whose source is itself a row), summing the
    # mass x_k that sits on rows at each step; then one pass over every edge distributes the
    # total: Σ_k x_kᵀ Â = (Σ_k x_k)ᵀ Â. One full pass instead of one per path length.
    inner = []
    for block in blocks():
        col_pos = position[block.cols]
        if block.dense:
            assert block.row_norm is not None
            keep = (col_pos >= 0).nonzero().squeeze(1)
            sub = block.weights[:, keep].abs() / block.row_norm[:, None]
            r, j = sub.nonzero(as_tuple=True)
            inner.append((block.rows[r], col_pos[keep][j], sub[r, j]))
        else:
            keep = col_pos >= 0
            inner.append((block.rows[keep], col_pos[keep], block.weights[keep]))
    inner_rows = torch.cat([r for r, _, _ in inner])
    inner_cols = torch.cat([c for _, c, _ in inner])
    inner_weight = torch.cat([w for _, _, w in inner])
    start = torch.zeros(row_nodes.numel())
    start[position[target_nodes]] = target_weights.float()
    total = propagate_influence(start, inner_rows, inner_cols, inner_weight, include_start=True)
    influence = torch.zeros(n_nodes)
    for block in blocks():
        if block.dense:  # Σ_r total[r] · Â[r, :] as one vector-matrix product
            assert block.row_norm is not None
            influence.index_add_(0, block.cols, (total[block.rows] / block.row_norm) @ block.weights.abs())
        else:
            influence.index_add_(0, block.cols, total[block.rows] * block.weights)
    return influence
