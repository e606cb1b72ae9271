"""GET /api/search: features by label, id and token across the directory's graphs and the store,
checked against the graphs' own node lists."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.server.test_api import nodes_and_links


def _features(client: TestClient, slug: str) -> list[dict]:
    body, _ = nodes_and_links(client, slug)
    return [
        n
        for n in body["nodes"]
        if n["feature_type"] not in ("embedding", "logit") and "error" not in n["feature_type"]
    ]


def test_a_label_finds_the_feature_in_every_graph_that_keeps_it(client: TestClient) -> None:
    small = _features(client, "small")
    node = small[0]
    layer, feature = (int(part) for part in node["node_id"].split("_")[:2])
    assert (
        client.put(f"/api/features/{layer}/{feature}/label", json={"label": "Lone Star state"}).status_code
        == 200
    )
    body = client.get("/api/search", params={"q": "lone STAR"}).json()
    assert [(r["layer"], r["feature"], r["label"], r["match"]) for r in body["results"]] == [
        (layer, feature, "Lone Star state", "label")
    ]
    expected = set()
    for slug in ("demo", "small", "packed"):
        ids = [
            n["node_id"] for n in _features(client, slug) if n["node_id"].startswith(f"{layer}_{feature}_")
        ]
        if ids:
            expected.add(slug)
    graphs = body["results"][0]["graphs"]
    assert {g["slug"] for g in graphs} == expected and "small" in expected
    assert any(g["node_id"] == node["node_id"] or g["slug"] != "small" for g in graphs)
    assert body["skipped"] and "broken.json" in body["skipped"][0]  # an unreadable file is named


def test_an_id_and_a_token_find_features(client: TestClient) -> None:
    demo = _features(client, "demo")
    layer, feature, position = (int(part) for part in demo[0]["node_id"].split("_"))
    for query in (f"{layer}_{feature}", f"L{layer}/{feature}", demo[0]["node_id"]):
        rows = client.get("/api/search", params={"q": query}).json()["results"]
        assert rows[0]["layer"] == layer and rows[0]["feature"] == feature and rows[0]["match"] == "id", query
    body, _ = nodes_and_links(client, "demo")
    token = body["metadata"]["prompt_tokens"][position]
    rows = client.get("/api/search", params={"q": token.strip()}).json()["results"]
    demo_hits = {g["node_id"] for r in rows for g in r["graphs"] if g["slug"] == "demo"}
    at_token = {
        n["node_id"] for n in demo if body["metadata"]["prompt_tokens"][n["ctx_idx"]].strip() == token.strip()
    }
    assert demo_hits == at_token


def test_an_empty_query_is_422(client: TestClient) -> None:
    assert client.get("/api/search", params={"q": "   "}).status_code == 422
    assert client.get("/api/search").status_code == 422
