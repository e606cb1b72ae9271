"""Influence, thresholds and pruning: a hand-built DAG and equality with dense references."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.graph import dense_reference
from tests.graph.factory import circuit_tracer_dag, dense_adjacency, hand_built_graph, random_graph
from tracewire.errors import GraphFormatError
from tracewire.graph.graph import Graph
from tracewire.graph.influence import (
    logit_weights,
    node_influence,
    normalized_abs_weights,
    propagate_influence,
)
from tracewire.graph.pruning import (
    PruneResult,
    cumulative_scores,
    find_threshold,
    keep_all,
    prune_graph,
    subgraph,
)


def test_hand_built_influence() -> None:
    # Â(target) = f0 3/8, f1 1/8, err 4/8; Â(f0) = tok0 1; Â(f1) = tok0 1/4, tok1 3/4.
    expected = [0.1875, 0.0625, 0.0, 0.25, 0.203125, 0.046875, 0.0]
    assert node_influence(hand_built_graph()).tolist() == pytest.approx(expected)


def test_hand_built_pruning() -> None:
    graph = hand_built_graph()
    result = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    # Influence ranks err(0,1) .25, tok0 .203, f0 .1875 (cum .854 ≥ .8): f1 and err(0,0) go.
    assert result.node_mask.tolist() == [True, False, False, True, True, True, True]
    # Edges kept: target←f0, target←err(0,1), f0←tok0 (all edges of the kept nodes).
    assert result.edge_mask.tolist() == [True, False, True, True, False, False]
    total = 0.75
    expected_cumulative = [0.640625 / total, 0.703125 / total, 1.0, 0.25 / total, 0.453125 / total, 1.0, 1.0]
    assert result.cumulative_scores.tolist() == pytest.approx(expected_cumulative, abs=1e-6)

    # A low edge threshold keeps only target←err(0,1); f0 loses its outgoing edge and then goes.
    strict = prune_graph(graph, node_threshold=0.8, edge_threshold=0.3)
    assert strict.edge_mask.tolist() == [False, False, True, False, False, False]
    assert strict.node_mask.tolist() == [False, False, False, True, True, True, True]


CIRCUIT_TRACER_INFLUENCE = [1 / 12, 1 / 3, 0, 1 / 4, 0, 0, 1 / 3, 0, 1 / 4, 1 / 4, 1 / 6, 0]


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float32, 1e-6), (torch.float64, 1e-15)])
def test_circuit_tracer_dag_influence(dtype: torch.dtype, rel: float) -> None:
    # circuit-tracer tests/test_graph.py::test_small_graph; zeros must be exactly zero.
    influence = node_influence(circuit_tracer_dag(dtype))
    assert influence.tolist() == pytest.approx(CIRCUIT_TRACER_INFLUENCE, rel=rel, abs=0.0)


def test_circuit_tracer_dag_pruning() -> None:
    graph = circuit_tracer_dag(torch.float64)
    # Edges: 11←1, 11←3, 11←6, 11←8, 3←0, 3←1, 3←6, 1←9, 1←10, 0←9.
    # Influence ranks (twelfths) 4, 4, 3, 3, 3, 2, 1 of 20: 0.8 is reached at 1/4, so f0 (1/12)
    # goes with 3←0 and 0←9, as upstream's pruned_adjacency_matrix.
    result = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    node_kept = [False, True, False, True, False, False, True, False, True, True, True, True]
    assert result.node_mask.tolist() == node_kept
    assert result.edge_mask.tolist() == [True, True, True, True, False, True, True, True, True, False]

    # Upstream's post_pruning_edge_matrix: edge influence Â'·(I' + w) of the pruned graph.
    targets, sources = graph.edge_targets, graph.edge_sources
    alive = result.node_mask[targets] & result.node_mask[sources]
    normalized = normalized_abs_weights(targets, torch.where(alive, graph.edge_weights, 0.0), graph.n_nodes)
    weights = logit_weights(graph, torch.float64)
    reach = propagate_influence(weights, targets, sources, normalized) + weights
    edge_influence = (normalized * reach[targets]).tolist()
    assert edge_influence == pytest.approx([1 / 4] * 4 + [0, 1 / 8, 1 / 8, 3 / 16, 3 / 16, 0], abs=1e-15)

    # Edge scores 1/4 x4, 3/16 x2, 1/8 x2 of 13/8: 0.7 is reached at the first 3/16; both tied
    # token edges stay, f3 loses its inputs and goes, taking 11←3 with it.
    tied = prune_graph(graph, node_threshold=0.8, edge_threshold=0.7)
    assert tied.edge_mask.tolist() == [True, False, True, True, False, False, False, True, True, False]
    assert tied.node_mask.tolist() == [False, True] + [False] * 4 + [True, False] + [True] * 4


@pytest.fixture(params=["dense", "edge list"])
def propagation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of propagating influence: dense products (small graphs) and the edge list."""
    if request.param == "edge list":
        monkeypatch.setattr("tracewire.graph.influence.DENSE_PROPAGATION_BYTES", 0)
    else:
        monkeypatch.setattr("tracewire.graph.influence.DENSE_PROPAGATION_BYTES", 2**40)
    return str(request.param)


def test_cycle_is_reported(propagation: str) -> None:
    graph = hand_built_graph()
    cyclic = replace(
        graph,
        # features 0 and 1 feed each other (an edge into a token node is refused by Graph itself)
        edge_targets=torch.cat([graph.edge_targets, torch.tensor([0, 1])]),
        edge_sources=torch.cat([graph.edge_sources, torch.tensor([1, 0])]),
        edge_weights=torch.cat([graph.edge_weights, torch.tensor([1.0, 1.0])]),
    )
    with pytest.raises(GraphFormatError, match="cycle"):
        node_influence(cyclic)


@pytest.mark.parametrize("seed", range(6))
def test_influence_equals_matrix_inverse(seed: int, propagation: str) -> None:
    graph = random_graph(
        n_layers=4, n_pos=5, n_features=40, n_targets=3, edge_density=0.3, seed=seed, dtype=torch.float64
    )
    adjacency = dense_reference.normalize(dense_adjacency(graph))
    expected = dense_reference.influence(adjacency, dense_reference.logit_weights(graph))
    assert torch.allclose(node_influence(graph), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    ("node_fraction", "edge_fraction"), [(0.8, 0.98), (0.5, 0.7), (0.95, 0.9), (0.3, 0.5)]
)
def test_prune_equals_dense_reference(seed: int, node_fraction: float, edge_fraction: float) -> None:
    graph = random_graph(
        n_layers=4, n_pos=5, n_features=40, n_targets=3, edge_density=0.3, seed=seed, dtype=torch.float64
    )
    result = prune_graph(graph, node_fraction, edge_fraction)
    node_mask, edge_mask, cumulative = dense_reference.prune(graph, node_fraction, edge_fraction)
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(result.edge_mask, edge_mask)
    assert torch.allclose(result.cumulative_scores, cumulative, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_prune_float32_matches_float64_reference(seed: int) -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=30, n_targets=2, edge_density=0.3, seed=seed)
    result = prune_graph(graph)
    node_mask, edge_mask, _ = dense_reference.prune(graph.to(torch.float64), 0.8, 0.98)
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(result.edge_mask, edge_mask)


def _heavy_tailed_scores(count: int) -> torch.Tensor:
    """Scores spanning many decades, with zeros and a block of ties."""
    generator = torch.Generator().manual_seed(count)
    scores = torch.rand(count, generator=generator) ** 8
    scores[: count // 200] = 0.0
    scores[count // 100 : count // 50] = scores[count // 2]
    return scores


@pytest.mark.parametrize("count", [1000, 300_000])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 0.8, 0.98, 0.999])
def test_find_threshold_equals_sort_definition(count: int, fraction: float) -> None:
    scores = _heavy_tailed_scores(count)
    # The reference summed in float64 (find_threshold accumulates in float64 for any input dtype).
    expected = float(dense_reference.threshold(scores.double(), fraction))
    assert float(find_threshold(scores, fraction)) == expected
    assert float(find_threshold(scores.double(), fraction)) == expected


@pytest.mark.parametrize("fraction", [0.1, 0.8, 0.98])
def test_find_threshold_does_not_sort_every_score(fraction: float, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = _heavy_tailed_scores(300_000)
    sorted_sizes: list[int] = []
    real_sort = torch.sort

    def recording_sort(values: torch.Tensor, *args: object, **kwargs: object) -> object:
        sorted_sizes.append(values.numel())
        return real_sort(values, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(torch, "sort", recording_sort)
    find_threshold(scores, fraction)
    assert max(sorted_sizes, default=0) < scores.numel() // 10


@pytest.mark.parametrize("count", [1000, 300_000])
def test_find_threshold_of_one_is_smallest_positive_score(count: int) -> None:
    scores = _heavy_tailed_scores(count)
    assert float(find_threshold(scores, 1.0)) == float(scores[scores > 0].min())


def test_find_threshold_edge_cases() -> None:
    assert float(find_threshold(torch.zeros(0), 0.8)) == 0.0
    assert float(find_threshold(torch.zeros(5), 0.8)) == 0.0
    assert float(find_threshold(torch.tensor([3.0]), 0.8)) == 3.0


@pytest.mark.parametrize("seed", range(4))
def test_tokens_and_targets_always_kept(seed: int) -> None:
    graph = random_graph(n_layers=3, n_pos=5, n_features=30, n_targets=3, edge_density=0.2, seed=seed)
    result = prune_graph(graph, node_threshold=0.1, edge_threshold=0.1)
    assert bool(result.node_mask[graph.token_offset :].all())


@pytest.mark.parametrize("seed", range(4))
def test_threshold_one_keeps_everything_reachable(seed: int) -> None:
    graph = random_graph(
        n_layers=3, n_pos=4, n_features=30, n_targets=2, edge_density=0.3, seed=seed, dtype=torch.float64
    )
    influence = node_influence(graph)
    result = prune_graph(graph, node_threshold=1.0, edge_threshold=1.0)
    # Every factory feature has an input, so a node with influence lies on a token→target path.
    assert bool(result.node_mask[influence > 0].all())
    reaching = (influence[graph.edge_sources] > 0) & (graph.edge_targets >= 0)
    into_influential = reaching & (
        (influence[graph.edge_targets] > 0) | (graph.edge_targets >= graph.target_offset)
    )
    assert bool(result.edge_mask[into_influential].all())


@pytest.mark.parametrize("seed", range(4))
def test_monotone_in_thresholds(seed: int) -> None:
    graph = random_graph(n_layers=4, n_pos=5, n_features=50, n_targets=3, edge_density=0.3, seed=seed)
    influence = node_influence(graph)
    previous_nodes = torch.zeros(graph.n_nodes, dtype=torch.bool)
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        selected = influence >= find_threshold(influence, fraction)
        assert bool((selected | ~previous_nodes).all()), "node selection must grow with the node threshold"
        previous_nodes = selected
    previous = prune_graph(graph, 0.8, 0.1)
    for edge_fraction in (0.3, 0.6, 0.9, 0.98, 1.0):
        current = prune_graph(graph, 0.8, edge_fraction)
        assert bool((current.edge_mask | ~previous.edge_mask).all())
        assert bool((current.node_mask | ~previous.node_mask).all())
        previous = current


@pytest.mark.parametrize("seed", range(6))
def test_no_dangling_nodes_after_fixpoint(seed: int) -> None:
    graph = random_graph(n_layers=4, n_pos=5, n_features=50, n_targets=3, edge_density=0.2, seed=seed)
    result = prune_graph(graph, 0.6, 0.7)
    kept_edges = result.edge_mask
    assert bool((result.node_mask[graph.edge_sources[kept_edges]]).all())
    assert bool((result.node_mask[graph.edge_targets[kept_edges]]).all())
    outgoing = torch.zeros(graph.n_nodes, dtype=torch.bool)
    outgoing[graph.edge_sources[kept_edges]] = True
    incoming = torch.zeros(graph.n_nodes, dtype=torch.bool)
    incoming[graph.edge_targets[kept_edges]] = True
    kept = result.node_mask
    assert bool(outgoing[: graph.token_offset][kept[: graph.token_offset]].all())
    assert bool(incoming[: graph.n_features][kept[: graph.n_features]].all())


def test_cumulative_scores_rank_order() -> None:
    scores = cumulative_scores(torch.tensor([0.1, 0.4, 0.0, 0.5]))
    assert scores.tolist() == pytest.approx([1.0, 0.9, 1.0, 0.5])


def test_invalid_thresholds() -> None:
    with pytest.raises(ValueError, match="node_threshold"):
        prune_graph(hand_built_graph(), node_threshold=1.5)


def test_subgraph_keeps_layout_and_kept_edges() -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=30, n_targets=2, seed=3)
    result = prune_graph(graph, 0.6, 0.8)
    pruned = subgraph(graph, result)
    kept_features = result.node_mask[: graph.n_features]
    assert torch.equal(pruned.features, graph.features[kept_features])
    assert pruned.n_edges == int(result.edge_mask.sum())
    assert pruned.n_errors == graph.n_errors and pruned.n_targets == graph.n_targets
    assert pruned.metadata["pruned_from"] == {"n_features": graph.n_features, "n_edges": graph.n_edges}
    old_ids = {_node_key(graph, i) for i in torch.nonzero(result.node_mask).flatten().tolist()}
    new_edges = {
        (_node_key(pruned, t), _node_key(pruned, s), w)
        for t, s, w in zip(
            pruned.edge_targets.tolist(), pruned.edge_sources.tolist(), pruned.edge_weights.tolist()
        )
    }
    old_edges = {
        (_node_key(graph, t), _node_key(graph, s), w)
        for t, s, w, keep in zip(
            graph.edge_targets.tolist(),
            graph.edge_sources.tolist(),
            graph.edge_weights.tolist(),
            result.edge_mask.tolist(),
        )
        if keep
    }
    assert new_edges == old_edges
    assert {key for edge in new_edges for key in edge[:2]} <= old_ids
    again = subgraph(pruned, keep_all(pruned))
    assert again.diff(replace(pruned, metadata=again.metadata)) == []


def test_subgraph_rejects_foreign_result() -> None:
    graph = random_graph(seed=1)
    other = random_graph(seed=2, n_features=5)
    with pytest.raises(ValueError, match="masks"):
        subgraph(
            graph,
            PruneResult(
                *(getattr(keep_all(other), f) for f in ("node_mask", "edge_mask", "cumulative_scores"))
            ),
        )


def _node_key(graph: Graph, index: int) -> tuple[object, ...]:
    """A layout-independent name for a node."""
    kind = graph.node_kind(index)
    if index < graph.n_features:
        return (int(kind), *graph.features[index].tolist())
    return (int(kind), index - graph.n_features)
