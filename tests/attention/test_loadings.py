"""Head loadings against frozen-model interventions (tiny random models, all six architectures, fp32)."""

from __future__ import annotations

import pytest
import torch

from tests.attention.factory import traced
from tests.attention.oracle import head_part_adjacency
from tests.factories.models import ARCHS
from tracewire.attention.loadings import HeadLoadings, head_loadings

ATOL, RTOL = 1e-5, 1e-4


def _close(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> None:
    gap = (got - want).abs()
    bound = ATOL + RTOL * scale.abs()
    assert bool((gap <= bound).all()), f"worst gap {float((gap / bound).max()):.3g} x the tolerance"


@pytest.mark.parametrize("arch", ARCHS)
def test_loadings_sum_to_every_edge_and_match_head_interventions(arch: str) -> None:
    rm, graph = traced(arch)
    loadings = head_loadings(graph, rm, progress=False)
    assert loadings.targets.numel() == graph.n_edges > 500
    # 1. exact: direct + every head = the edge the engine computed
    _close(loadings.total, graph.edge_weights, graph.edge_weights)
    # 2. each part = the intervention that removes that head's output (later layers held)
    full, direct, heads = head_part_adjacency(rm, graph)
    t, s = graph.edge_targets, graph.edge_sources
    _close(full[t, s], graph.edge_weights, graph.edge_weights)  # the oracle measures the same edges
    _close(loadings.direct, direct[t, s], graph.edge_weights)
    measured = heads[:, :, t, s].permute(2, 0, 1)
    _close(loadings.heads, measured, graph.edge_weights[:, None, None])
    # attention is really there: heads carry a visible share of the edges
    assert float(loadings.heads.abs().sum()) > 0.05 * float(graph.edge_weights.abs().sum())


def test_skipless_transcoders_and_a_subset_of_edges() -> None:
    rm, graph = traced("llama", kind="plt")
    pick = torch.tensor([0, 7, graph.n_edges - 1])
    loadings = head_loadings(graph, rm, edges=pick, progress=False)
    _close(loadings.total, graph.edge_weights[pick], graph.edge_weights[pick])
    assert loadings.per_layer.shape == (3, graph.n_layers)
    row = loadings.row(int(graph.edge_targets[pick[1]]), int(graph.edge_sources[pick[1]]))
    top = loadings.top_heads(row, n=3)
    assert len(top) == 3 and abs(top[0]["value"]) >= abs(top[-1]["value"])
    again = HeadLoadings.from_sections(loadings.sections())
    assert again is not None and torch.equal(again.heads, loadings.heads)


def test_bad_edge_indices_are_named() -> None:
    rm, graph = traced("gpt2")
    with pytest.raises(ValueError, match="edge indices"):
        head_loadings(graph, rm, edges=[graph.n_edges], progress=False)
