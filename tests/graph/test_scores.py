"""Replacement / completeness scores of graphs and subgraphs against dense references."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.graph import dense_reference
from tests.graph.factory import circuit_tracer_dag, dense_adjacency, hand_built_graph, random_graph
from tracewire.graph.pruning import prune_graph
from tracewire.graph.scores import ScoreContext, Scores, graph_scores, subgraph_scores


def test_hand_built_scores() -> None:
    # Influence: f0 .1875, f1 .0625, err(0,1) .25, tok0 .203125, tok1 .046875; target p = .5.
    scores = graph_scores(hand_built_graph())
    assert scores.replacement == pytest.approx(0.25 / 0.5)
    # Only the target row takes input from an error (4 of 8): (0.5 * 0.5 + 0.75) / 1.25.
    assert scores.completeness == pytest.approx(0.8)


def test_hand_built_subgraph_folds_outgoing_edges_into_error() -> None:
    graph = hand_built_graph(f1_to_target=1.0)
    scores = subgraph_scores(graph, [0])  # drop f1: target←f1 (+1) joins target←err(0,1) (+4) → 5
    # Â(target) = f0 3/8, err 5/8; I: f0 .1875, err .3125, tok0 .1875.
    assert scores.replacement == pytest.approx(0.1875 / 0.5)
    assert scores.completeness == pytest.approx((0.5 * 3 / 8 + 0.6875) / 1.1875)


def test_circuit_tracer_dag_scores_and_zero_errors() -> None:
    graph = circuit_tracer_dag(torch.float64)
    scores = graph_scores(graph)
    # Influence (twelfths): tokens 3 + 2, errors err(0,1) 4 + err(1,1) 3 -> replacement 5/12.
    assert scores.replacement == pytest.approx(5 / 12, rel=1e-12)
    # Error shares: target 2/4 (I + w = 1), f3 1/3 (I = 1/4); sum (1 - share)(I + w) = 25/12 of 32/12.
    assert scores.completeness == pytest.approx(25 / 32, rel=1e-12)

    from_error = (graph.edge_sources >= graph.error_offset) & (graph.edge_sources < graph.token_offset)
    no_errors = replace(
        graph,
        edge_targets=graph.edge_targets[~from_error],
        edge_sources=graph.edge_sources[~from_error],
        edge_weights=graph.edge_weights[~from_error],
    )
    assert graph_scores(no_errors) == Scores(replacement=1.0, completeness=1.0)


def test_folding_sums_signed_weights() -> None:
    graph = hand_built_graph(f1_to_target=-4.0)  # cancels target←err(0,1) exactly
    scores = subgraph_scores(graph, [0])
    # Target's only remaining input is f0, so no error influence at all.
    assert scores.replacement == pytest.approx(1.0)
    assert scores.completeness == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_graph_scores_equal_dense_reference(seed: int) -> None:
    graph = random_graph(
        n_layers=4, n_pos=5, n_features=40, n_targets=3, edge_density=0.3, seed=seed, dtype=torch.float64
    )
    replacement, completeness = dense_reference.scores_of(dense_adjacency(graph), graph)
    scores = graph_scores(graph)
    assert scores.replacement == pytest.approx(replacement, rel=1e-10)
    assert scores.completeness == pytest.approx(completeness, rel=1e-10)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.7])
def test_subgraph_scores_equal_dense_reference(seed: int, keep_fraction: float) -> None:
    graph = random_graph(
        n_layers=4, n_pos=5, n_features=40, n_targets=3, edge_density=0.3, seed=seed, dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(seed)
    keep_feature = torch.rand(graph.n_features, generator=generator) < keep_fraction
    replacement, completeness = dense_reference.scores_of(
        dense_reference.folded_adjacency(graph, keep_feature), graph
    )
    scores = subgraph_scores(graph, torch.nonzero(keep_feature).flatten())
    assert scores.replacement == pytest.approx(replacement, rel=1e-10)
    assert scores.completeness == pytest.approx(completeness, rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_full_subset_reproduces_graph_scores(seed: int) -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=30, n_targets=2, seed=seed)
    context = ScoreContext(graph)
    full = context.graph_scores()
    for subset in (
        torch.arange(graph.n_nodes),
        torch.ones(graph.n_nodes, dtype=torch.bool),
        torch.arange(graph.n_features),
    ):
        scores = context.subgraph_scores(subset)
        assert scores.replacement == pytest.approx(full.replacement, rel=1e-6)
        assert scores.completeness == pytest.approx(full.completeness, rel=1e-6)


def test_empty_subset_folds_every_feature() -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=30, n_targets=2, seed=5, dtype=torch.float64)
    everything_folded = dense_reference.folded_adjacency(
        graph, torch.zeros(graph.n_features, dtype=torch.bool)
    )
    replacement, completeness = dense_reference.scores_of(everything_folded, graph)
    scores = subgraph_scores(graph, [])
    assert scores.replacement == pytest.approx(replacement, rel=1e-10)
    assert scores.completeness == pytest.approx(completeness, rel=1e-10)
    # With no features left only errors and tokens feed the targets directly.
    assert scores.replacement < graph_scores(graph).replacement


def test_subset_accepts_feature_mask_and_prune_mask() -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=30, n_targets=2, seed=6)
    result = prune_graph(graph)
    context = ScoreContext(graph)
    by_mask = context.subgraph_scores(result.node_mask)
    by_features = context.subgraph_scores(result.node_mask[: graph.n_features])
    by_indices = context.subgraph_scores(torch.nonzero(result.node_mask).flatten().tolist())
    assert by_mask == by_features == by_indices
    assert isinstance(by_mask, Scores)


def test_bad_subsets_are_rejected() -> None:
    graph = random_graph(seed=1)
    with pytest.raises(ValueError, match="mask"):
        subgraph_scores(graph, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="indices"):
        subgraph_scores(graph, [graph.n_nodes])
