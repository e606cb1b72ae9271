"""Linear propagation along graph edges against a dense matrix formula."""

from __future__ import annotations

import torch

from tests.graph.factory import dense_adjacency, random_graph
from tracewire.evaluation.propagation import predicted_effects


def test_direct_and_total_effects_match_the_dense_series() -> None:
    graph = random_graph(n_layers=4, n_pos=3, n_features=30, n_targets=3, edge_density=0.4, seed=5)
    dense = dense_adjacency(graph).double()
    n, k = graph.n_features, graph.n_targets
    acts = graph.activations.double()
    scaled = dense[:, :n] / acts[None, :]  # Ã: per unit of source activation
    ff = scaled[:n]  # feature -> feature
    tf = scaled[graph.target_offset :]  # feature -> target
    sources = torch.tensor([0, 7, 29])
    deltas = torch.tensor([-1.0, 0.5, -0.25]) * acts[sources]
    got = predicted_effects(graph, sources, deltas)
    start = torch.zeros(n, len(sources), dtype=torch.float64)
    start[sources, torch.arange(len(sources))] = deltas
    through = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - ff, start)  # (I − Ã_FF)⁻¹ δ
    assert torch.allclose(got.direct_targets, (tf @ start).T, atol=1e-10)
    assert torch.allclose(got.total_targets, (tf @ through).T, atol=1e-10)
    assert torch.allclose(got.total_features, (through - start).T, atol=1e-10)
    assert got.total_targets.shape == (3, k)
    assert (got.total_targets - got.direct_targets).abs().max() > 1e-6  # indirect paths exist


def test_no_sources_and_bad_sources() -> None:
    import pytest

    graph = random_graph(seed=1)
    empty = predicted_effects(graph, torch.tensor([], dtype=torch.long), torch.tensor([]))
    assert empty.total_targets.shape == (0, graph.n_targets)
    with pytest.raises(ValueError, match="feature node indices"):
        predicted_effects(graph, torch.tensor([graph.n_features]), torch.tensor([1.0]))
