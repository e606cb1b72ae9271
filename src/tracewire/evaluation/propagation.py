"""What a graph predicts an ablation does: linear propagation along its edges, errors frozen.

An edge ``A[t, s]`` from feature ``s`` is linear in the source's activation ``a_s`` (it is
``a_s`` times the frozen model's derivative), so changing ``a_s`` by ``δ`` changes node ``t``
(a feature's pre-activation or a target's read-out) by ``δ · A[t, s] / a_s``. A downstream
feature's activation moves with its pre-activation (slope 1 while it stays active), so the
change spreads on through *its* edges; error and token nodes never change. Summing over paths:

    direct  = Ã δ          (the edge itself)
    total   = Ã δ + Ã² δ + …   (direct + indirect through other feature nodes)

with ``Ã[t, s] = A[t, s] / a_s`` on feature sources. The graph is a DAG, so the series ends
after its depth. Everything is sparse (one sparse × dense product per step), for many sources at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tracewire.errors import GraphFormatError, InvalidArgumentError
from tracewire.graph.graph import Graph


@dataclass(frozen=True)
class PredictedEffects:
    """Predicted changes of the graph's targets (``[S, K]``) and feature nodes (``[S, F]``)."""

    direct_targets: torch.Tensor
    total_targets: torch.Tensor
    total_features: torch.Tensor


def predicted_effects(graph: Graph, sources: torch.Tensor, deltas: torch.Tensor) -> PredictedEffects:
    """Effects of changing feature node ``sources[i]``'s activation by ``deltas[i]`` (one at a time).

    ``sources``: ``[S]`` feature node indices; ``deltas``: ``[S]`` activation changes (an ablation
    of a fraction ``f`` is ``−f · a``).
    """
    n_features, n_targets = graph.n_features, graph.n_targets
    sources = torch.as_tensor(sources, dtype=torch.long).reshape(-1)
    deltas = torch.as_tensor(deltas, dtype=torch.float64).reshape(-1)
    if sources.shape != deltas.shape:
        raise InvalidArgumentError(
            f"sources {tuple(sources.shape)} and deltas {tuple(deltas.shape)} must have the same shape"
        )
    if sources.numel() and (int(sources.min()) < 0 or int(sources.max()) >= n_features):
        raise InvalidArgumentError(f"sources must be feature node indices in 0..{n_features - 1}")
    n_sources = int(sources.numel())

    from_feature = graph.edge_sources < n_features
    to_feature = graph.edge_targets < n_features
    to_target = graph.edge_targets >= graph.target_offset
    keep = from_feature & (to_feature | to_target)
    edge_src = graph.edge_sources[keep]
    edge_dst = graph.edge_targets[keep]
    # targets map to columns F..F+K of the state
    edge_dst = torch.where(
        edge_dst >= graph.target_offset, edge_dst - graph.target_offset + n_features, edge_dst
    )
    activations = graph.activations.double()
    safe = torch.where(activations == 0, torch.ones_like(activations), activations)
    weights = torch.where(activations[edge_src] == 0, 0.0, graph.edge_weights.double()[keep] / safe[edge_src])

    matrix = torch.sparse_coo_tensor(
        torch.stack([edge_dst, edge_src]),
        weights,
        (n_features + n_targets, n_features),
        check_invariants=True,
    ).coalesce()
    current = torch.zeros(n_sources, n_features, dtype=torch.float64)
    current[torch.arange(n_sources), sources] = deltas
    total = torch.zeros(n_sources, n_features + n_targets, dtype=torch.float64)
    direct: torch.Tensor | None = None
    for _ in range(n_features + 2):
        if not bool(current.any()):
            break
        step = torch.sparse.mm(matrix, current.T).T  # [S, F + K]
        if direct is None:
            direct = step[:, n_features:].clone()
        total += step
        current = step[:, :n_features]
    else:
        raise GraphFormatError("linear propagation did not end: the graph's feature edges have a cycle")
    if direct is None:
        direct = torch.zeros(n_sources, n_targets, dtype=torch.float64)
    return PredictedEffects(
        direct_targets=direct, total_targets=total[:, n_features:], total_features=total[:, :n_features]
    )
