"""The attention JSON routes on a graph that ``attribute()`` made with the server's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tests.interventions.setups import setup as tiny_setup
from tracewire.attention import TraceContext, head_loadings, qk_attribution, store_loadings
from tracewire.attribution.engine import attribute
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.interventions.api import Intervener
from tracewire.server import Steerer, create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("attention-routes")
    lm, ts = tiny_setup("llama", "skip")
    graph = attribute(torch.tensor([0, 2, 3, 4, 8, 6]), lm, ts, progress=False)
    graph.save(root / "live.safetensors")
    ctx = TraceContext.build(graph, lm, ts)
    store_loadings(graph, head_loadings(graph, ctx, edges=[0, 1, 2], progress=False))
    graph.save(root / "stored.safetensors")
    steerer = Steerer(Intervener(lm, ts))
    with TestClient(create_app(root, steerer=steerer), base_url="http://127.0.0.1") as client:
        yield client, graph, ctx, root
    steerer.close()


def test_heads_of_an_edge_stored_or_computed(served) -> None:
    client, graph, _, _ = served
    for slug, edge, stored in (("stored", 1, True), ("live", 5, False)):
        t, s = int(graph.edge_targets[edge]), int(graph.edge_sources[edge])
        response = client.get(f"/api/graphs/{slug}/heads", params={"target": t, "source": s, "top": 100})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["stored"] is stored and body["rule"] == "last-head"
        parts = body["direct"] + sum(h["value"] for h in body["heads"])
        assert parts == pytest.approx(float(graph.edge_weights[edge]), abs=1e-5)
        assert sum(body["layers"]) == pytest.approx(parts - body["direct"], abs=1e-5)
    missing = client.get("/api/graphs/live/heads", params={"target": 0, "source": 10**6})
    assert missing.status_code == 404 and "no edge" in missing.json()["detail"]
    # the explorer names nodes by their Neuronpedia ids
    ids = node_ids(graph)
    t, s = int(graph.edge_targets[1]), int(graph.edge_sources[1])
    by_id = client.get("/api/graphs/stored/heads", params={"target_id": ids[t], "source_id": ids[s]}).json()
    assert (by_id["target"], by_id["source"], by_id["target_id"]) == (t, s, ids[t])
    both = client.get("/api/graphs/stored/heads", params={"target": t, "target_id": ids[t], "source": s})
    assert both.status_code == 422 and "exactly one of target" in both.json()["detail"]


def test_qk_computed_and_summary(served) -> None:
    client, graph, ctx, _ = served
    response = client.post(
        "/api/graphs/live/qk", json={"layer": 1, "head": 2, "query": 5, "keys": [4, 0], "pairs": 5}
    )
    assert response.status_code == 200, response.text
    entries = response.json()
    expected = qk_attribution(graph, ctx, layer=1, head=2, query=5, keys=[4, 0])
    ids = node_ids(graph)
    for entry, mine in zip(entries, expected, strict=True):
        assert entry["key"] == mine.key and entry["kv_head"] == 1
        assert entry["score"] == pytest.approx(mine.score, abs=1e-6)
        assert entry["pair_total"] + sum(entry["constants"].values()) == pytest.approx(
            entry["score"], abs=1e-5
        )
        assert len(entry["pairs"]) == 5
        for pair in entry["pairs"]:
            for side in ("query_source", "key_source"):
                source = pair[side]
                assert source["node_id"] == (ids[source["node"]] if source["node"] >= 0 else None)
    bad = client.post("/api/graphs/live/qk", json={"layer": 9, "head": 0, "query": 5})
    assert bad.status_code == 422 and "layer 9" in bad.json()["detail"]
    summary = client.get("/api/graphs/stored/attention").json()
    assert summary["stored_loadings"] == 3 and summary["can_compute"] is True


def test_without_a_model_only_stored_data_is_served(served) -> None:
    _, graph, _, root = served
    with TestClient(create_app(Path(root)), base_url="http://127.0.0.1") as client:
        t, s = int(graph.edge_targets[0]), int(graph.edge_sources[0])
        assert client.get("/api/graphs/stored/heads", params={"target": t, "source": s}).status_code == 200
        live = client.get("/api/graphs/live/heads", params={"target": t, "source": s})
        assert live.status_code == 503 and "--model" in live.json()["detail"]
        assert client.get("/api/graphs/live/qk").json() == []
