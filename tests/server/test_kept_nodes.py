"""Pinned nodes survive the server's pruning (``keep=``): a shared link or a saved state names
nodes the default pruning drops, and the explorer must be able to show them with their links."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.server.fakes import demo_graph
from tests.server.test_api import nodes_and_links
from tracewire.graph import prune_graph
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server.kept_nodes import parse_keep


def _pruned_away_features(threshold: float) -> list[str]:
    graph = demo_graph()
    prune = prune_graph(graph, threshold, 0.98)
    ids = node_ids(graph)
    return [ids[i] for i in range(graph.n_features) if not bool(prune.node_mask[i])]


def test_kept_nodes_are_shown_with_every_link_to_a_shown_node(client: TestClient) -> None:
    dropped = _pruned_away_features(0.5)[:3]
    assert len(dropped) == 3
    plain, plain_links = nodes_and_links(client, "demo", "node_threshold=0.5")
    body, links = nodes_and_links(client, "demo", f"node_threshold=0.5&keep={','.join(dropped)},nope_1_2")
    shown = {node["node_id"] for node in body["nodes"]}
    assert shown == {node["node_id"] for node in plain["nodes"]} | set(dropped)  # "nope" is ignored
    # the plain view's links are all there, plus exactly the graph's edges between a kept node and
    # a shown node
    assert set(plain_links) <= set(links)
    graph = demo_graph()
    ids = node_ids(graph)
    expected_extra = {
        (ids[s], ids[t])
        for s, t in zip(graph.edge_sources.tolist(), graph.edge_targets.tolist())
        if (ids[s] in dropped or ids[t] in dropped) and ids[s] in shown and ids[t] in shown
    }
    assert {(s, t) for s, t, _ in links} - {(s, t) for s, t, _ in plain_links} == expected_extra - {
        (s, t) for s, t, _ in plain_links
    }
    assert expected_extra


def test_kept_nodes_of_a_json_graph_pass_its_influence_filter(client: TestClient) -> None:
    everything, _ = nodes_and_links(client, "small")
    features = [node for node in everything["nodes"] if node["feature_type"] not in ("embedding", "logit")]
    above = [node["node_id"] for node in features if node["influence"] > 0.5][:2]
    body, _ = nodes_and_links(client, "small", f"node_threshold=0.5&keep={','.join(above)}")
    shown = {node["node_id"] for node in body["nodes"]}
    assert set(above) <= shown
    assert len(above) == 2
    for node in body["nodes"]:
        if node["feature_type"] not in ("embedding", "logit"):
            assert node["influence"] <= 0.5 or node["node_id"] in above


def test_parse_keep() -> None:
    assert parse_keep(None) == () and parse_keep("") == ()
    assert parse_keep("b,a,,b") == ("a", "b")
