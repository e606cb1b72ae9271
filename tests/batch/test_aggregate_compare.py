"""Aggregation recovers a planted chain; comparison ranks a planted edge difference first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.batch.planted import FIRES_ON, PROMPTS, TARGET, A, B, C, D, planted_model, planted_transcoders
from tracewire.attribution.engine import attribute
from tracewire.graph.aggregate import aggregate_graphs
from tracewire.graph.compare import compare_graphs
from tracewire.graph.graph import Graph
from tracewire.graph.influence import node_influence


@pytest.fixture(scope="module")
def planted_graphs() -> list[Graph]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = planted_model()
        transcoders = planted_transcoders(loaded)
        return [attribute(p, loaded, transcoders, targets=[TARGET], progress=False) for p in PROMPTS]
    finally:
        torch.set_num_threads(before)


def node_of(graph: Graph, key: tuple[int, int]) -> int:
    """Node index of the (layer, feature) that fires at one position of ``graph``."""
    return next(i for i, (layer, _, f) in enumerate(graph.features.tolist()) if (layer, f) == key)


def active(graph: Graph) -> set[tuple[int, int]]:
    return {(layer, feature) for layer, _, feature in graph.features.tolist()}


def test_the_planted_features_fire_where_planted(planted_graphs: list[Graph]) -> None:
    for i, graph in enumerate(planted_graphs):
        expected = {key for key, prompts in FIRES_ON.items() if i in prompts}
        assert active(graph) == expected, graph.prompt
        assert set(graph.features[:, 1].tolist()) <= {3}, "only the last position fires"


def test_aggregate_recovers_exactly_the_planted_chain(planted_graphs: list[Graph], tmp_path: Path) -> None:
    aggregate = aggregate_graphs(planted_graphs, names=[f"p{i}" for i in range(10)], node_threshold=0.99)
    counts = {tuple(aggregate.features[i].tolist()): int(aggregate.feature_counts[i]) for i in range(4)}
    assert counts == {A: 8, B: 8, C: 4, D: 10}  # present in that many graphs
    circuit = aggregate.common_circuit(min_fraction=0.8)
    assert circuit.features == [A, B] and circuit.feature_counts == [8, 8]  # D never influential, C too rare
    edges = dict(zip(circuit.edges, circuit.edge_counts))
    assert edges[("L1 F2", "L3 F1")] == 8 and edges[("L3 F1", f"target {TARGET!r}")] == 8
    assert {node for edge in edges for node in edge} <= {"L1 F2", "L3 F1", f"target {TARGET!r}"}

    # The merged edge A -> B: count, sum and mean against the per-graph edges.
    per_graph = []
    for graph in planted_graphs[:8]:
        a_node = node_of(graph, A)
        b_node = node_of(graph, B)
        hit = (graph.edge_sources == a_node) & (graph.edge_targets == b_node)
        per_graph.append(float(graph.edge_weights[hit].sum()))
    merged = torch.nonzero(
        (aggregate.edge_sources == aggregate.feature_node(*A))
        & (aggregate.edge_targets == aggregate.feature_node(*B))
    ).item()
    assert int(aggregate.edge_counts[merged]) == 8
    assert float(aggregate.edge_sums[merged]) == pytest.approx(sum(per_graph), rel=1e-9)
    assert float(aggregate.edge_weights("mean")[merged]) == pytest.approx(sum(per_graph) / 8, rel=1e-9)
    low, high = min(per_graph), max(per_graph)
    assert low - 1e-9 <= float(aggregate.edge_weights("influence-weighted")[merged]) <= high + 1e-9

    # The common circuit as a graph: saves, loads, and has its influence on the target through A -> B.
    graph = aggregate.to_graph(min_fraction=0.8, feature_labels={A: "France feature", B: "says Paris"})
    path = graph.save(tmp_path / "circuit.safetensors")
    loaded = Graph.load(path)
    assert loaded.features.tolist() == [[1, 0, 2], [3, 0, 1]] and loaded.target_labels == [TARGET]
    assert loaded.metadata["aggregate"]["influential_counts"] == [8, 8]
    assert loaded.metadata["feature_labels"] == {"1:2": "France feature", "3:1": "says Paris"}
    assert bool((node_influence(loaded)[:2] > 0).all())

    index = aggregate.feature_index()
    assert [hit["graph"] for hit in index["features"]["1:2"]] == [f"p{i}" for i in range(8)]
    assert all(hit["positions"] == [3] and hit["influential"] for hit in index["features"]["3:1"])
    assert not any(hit["influential"] for hit in index["features"]["0:3"])


def test_compare_reports_the_one_changed_edge_first(planted_graphs: list[Graph]) -> None:
    a = planted_graphs[0]
    a_node = node_of(a, A)
    b_node = node_of(a, B)
    drop = (a.edge_sources == a_node) & (a.edge_targets == b_node)
    assert int(drop.sum()) == 1
    b = replace(
        a,
        edge_targets=a.edge_targets[~drop],
        edge_sources=a.edge_sources[~drop],
        edge_weights=a.edge_weights[~drop],
    )
    result = compare_graphs(a, b)
    first = result.ranked[0]
    assert (first.kind, first.source, first.target) == (
        "edge lost",
        ("feature", 1, 3, 2),
        ("feature", 3, 3, 1),
    )
    assert first.value_a == pytest.approx(float(a.edge_weights[drop]))
    assert (result.edges_lost, result.edges_gained, result.edges_changed) == (1, 0, 0)
    assert len(result.ranked) == 1 and result.alignment == "position"
    # Dropping A -> B lowers A's influence and nothing below it in the ranking of node deltas.
    assert result.nodes[0].key == ("feature", 1, 3, 2) and result.nodes[0].influence_delta < 0
    assert compare_graphs(a, a).ranked == []


def test_compare_of_two_prompts(planted_graphs: list[Graph]) -> None:
    """France vs Texas: A and B lost, their edges lost; the ranking is by influence moved."""
    result = compare_graphs(planted_graphs[0], planted_graphs[8])
    lost = {d.node for d in result.ranked if d.kind == "feature lost"}
    assert lost == {("feature", *key[:1], 3, key[1]) for key in (A, B, C)}
    assert all(d.kind != "feature gained" for d in result.ranked)
    scores = [d.score for d in result.ranked]
    assert scores == sorted(scores, reverse=True)
    influence = node_influence(planted_graphs[0])
    b_index = node_of(planted_graphs[0], B)
    b_lost = next(d for d in result.ranked if d.node == ("feature", 3, 3, 1))
    assert b_lost.score == pytest.approx(float(influence[b_index]), rel=1e-6)


def test_the_explorer_serves_the_aggregate_graph(planted_graphs: list[Graph], tmp_path: Path) -> None:
    """The aggregate is an ordinary graph file: the explorer's API lists it and gives its nodes and links."""
    from fastapi.testclient import TestClient

    from tracewire.server.app import create_app

    aggregate_graphs(planted_graphs, node_threshold=0.99).to_graph().save(tmp_path / "circuit.safetensors")
    with TestClient(create_app(tmp_path), base_url="http://127.0.0.1") as client:
        assert "circuit" in client.get("/api/graphs").text
        nodes = client.get("/api/graphs/circuit/nodes")
        assert nodes.status_code == 200, nodes.text
        assert client.get("/api/graphs/circuit/links").status_code == 200
        assert "Paris" in client.get("/api/graphs/circuit").text
