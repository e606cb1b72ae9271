"""JSON API of the graph explorer: every route, against the graph library it serves."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import jsonschema
import pytest
import torch
from fastapi.testclient import TestClient

from tests.server.fakes import demo_graph
from tracewire.graph import Graph, ScoreContext, from_neuronpedia_json, neuronpedia_schema, prune_graph
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server import FeatureService, create_app


def nodes_and_links(
    client: TestClient, slug: str, query: str = ""
) -> tuple[dict, list[tuple[str, str, float]]]:
    head = client.get(f"/api/graphs/{slug}/nodes?{query}")
    assert head.status_code == 200, head.text
    body = head.json()
    page = client.get(f"/api/graphs/{slug}/links?{query}").json()
    ids = [node["node_id"] for node in body["nodes"]]
    links = [(ids[s], ids[t], w) for s, t, w in zip(page["source"], page["target"], page["weight"])]
    assert page["total"] == body["n_links"] == len(links)
    return body, links


# ------------------------------------------------------------------------------------- listing
def test_info_says_what_the_server_can_do(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["features"] and info["steering"] and info["labels_writable"] and not info["read_only"]
    assert info["max_body_bytes"] == 64_000


def test_graph_list_names_readable_and_broken_graphs_but_nothing_outside(client: TestClient) -> None:
    graphs = {g["slug"]: g for g in client.get("/api/graphs").json()["graphs"]}
    assert set(graphs) == {"demo", "small", "packed", "broken"}  # no escape.json (symlink out), no secret
    assert graphs["demo"]["kind"] == "tracewire" and graphs["demo"]["prompt"] == "The capital of Texas is"
    assert graphs["demo"]["n_nodes"] == demo_graph().n_nodes
    assert graphs["packed"]["kind"] == "neuronpedia" and graphs["packed"]["file"] == "packed.json.gz"
    assert graphs["broken"]["error"] and "not a readable graph JSON" in graphs["broken"]["error"]


# ------------------------------------------------------------------------------------- views
def test_tracewire_graph_is_pruned_like_prune_graph(client: TestClient) -> None:
    graph = demo_graph()
    prune = prune_graph(graph, 0.8, 0.98)
    ids = node_ids(graph)
    body, links = nodes_and_links(client, "demo")
    assert body["kind"] == "tracewire" and body["settings"] == {"node_threshold": 0.8, "edge_threshold": 0.98}
    kept = prune.edge_mask & prune.node_mask[graph.edge_sources] & prune.node_mask[graph.edge_targets]
    expected = {
        (ids[s], ids[t]): w
        for s, t, w in zip(
            graph.edge_sources[kept].tolist(),
            graph.edge_targets[kept].tolist(),
            graph.edge_weights[kept].tolist(),
        )
    }
    assert {(s, t) for s, t, _ in links} == set(expected)
    for source, target, weight in links:
        assert weight == pytest.approx(expected[(source, target)], rel=1e-5, abs=1e-12)
    shown = {node["node_id"] for node in body["nodes"]}
    assert all(ids[i] in shown for i in range(graph.token_offset, graph.n_nodes))  # tokens and logits


def test_thresholds_change_the_view(client: TestClient) -> None:
    small, _ = nodes_and_links(client, "demo", "node_threshold=0.3&edge_threshold=0.5")
    large, _ = nodes_and_links(client, "demo", "node_threshold=1&edge_threshold=1")
    assert len(small["nodes"]) < len(large["nodes"])
    json_all, links_all = nodes_and_links(client, "small")
    json_few, links_few = nodes_and_links(client, "small", "node_threshold=0.5")
    assert len(json_few["nodes"]) < len(json_all["nodes"]) and len(links_few) < len(links_all)
    kept = {node["node_id"] for node in json_few["nodes"]}
    for node in json_all["nodes"]:
        always = node["feature_type"] in ("embedding", "logit")
        assert (node["node_id"] in kept) == (always or node["influence"] <= 0.5)


@pytest.mark.parametrize(
    "query", ["node_threshold=1.5", "node_threshold=-0.1", "node_threshold=abc", "edge_threshold=2"]
)
def test_bad_thresholds_are_422(client: TestClient, query: str) -> None:
    for route in ("nodes", "links"):
        assert client.get(f"/api/graphs/demo/{route}?{query}").status_code == 422
    assert client.get(f"/api/graphs/demo?{query}").status_code == 422


def test_links_come_in_pages(client: TestClient) -> None:
    whole = client.get("/api/graphs/small/links").json()
    pages = [
        client.get(f"/api/graphs/small/links?offset={o}&limit=50").json()
        for o in range(0, whole["total"], 50)
    ]
    for key in ("source", "target", "weight"):
        assert [value for page in pages for value in page[key]] == whole[key]
    assert client.get("/api/graphs/small/links?offset=100000").json()["source"] == []
    for bad in ("limit=0", "limit=1000001", "offset=-1"):
        assert client.get(f"/api/graphs/small/links?{bad}").status_code == 422


def test_download_is_a_schema_valid_neuronpedia_document(client: TestClient, graph_dir: Path) -> None:
    for slug in ("demo", "small", "packed"):
        response = client.get(f"/api/graphs/{slug}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        document = response.json()
        jsonschema.validate(document, neuronpedia_schema())
    raw = json.loads((graph_dir / "small.json").read_text())
    assert client.get("/api/graphs/small").json() == raw  # a JSON graph downloads as it is on disk
    assert client.get("/api/graphs/packed").json() == json.loads(
        gzip.decompress((graph_dir / "packed.json.gz").read_bytes())
    )
    # the pruned download agrees with the nodes/links view of the same thresholds
    document = client.get("/api/graphs/demo?node_threshold=0.5").json()
    body, links = nodes_and_links(client, "demo", "node_threshold=0.5")
    assert [n["node_id"] for n in document["nodes"]] == [n["node_id"] for n in body["nodes"]]
    assert [(link["source"], link["target"]) for link in document["links"]] == [(s, t) for s, t, _ in links]


# ------------------------------------------------------------------------------------- scores
def test_subgraph_scores_match_score_context(client: TestClient) -> None:
    graph = demo_graph()
    ids = node_ids(graph)
    pinned = [0, 3, 7, graph.token_offset]
    response = client.post("/api/graphs/demo/subgraph-scores", json={"pinnedIds": [ids[i] for i in pinned]})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = ScoreContext(graph).subgraph_scores(pinned)
    assert body["replacement"] == pytest.approx(expected.replacement)
    assert body["completeness"] == pytest.approx(expected.completeness)
    assert body["n_pinned_features"] == 3
    assert body["full_graph"]["replacement"] == pytest.approx(ScoreContext(graph).graph_scores().replacement)


def test_subgraph_scores_of_a_json_graph_use_the_imported_graph(client: TestClient, graph_dir: Path) -> None:
    document = json.loads((graph_dir / "small.json").read_text())
    features = [n["node_id"] for n in document["nodes"] if n["feature_type"] == "cross layer transcoder"][:5]
    body = client.post("/api/graphs/small/subgraph-scores", json={"pinnedIds": features}).json()
    graph = from_neuronpedia_json(document)
    index = dict(
        zip((n["node_id"] for n in document["nodes"]), graph.metadata["neuronpedia_import"]["nodes"])
    )
    expected = ScoreContext(graph).subgraph_scores([index[node] for node in features])
    assert body["replacement"] == pytest.approx(expected.replacement)
    assert body["n_pinned_features"] == 5


def test_unknown_pinned_ids_are_named_in_a_422(client: TestClient) -> None:
    response = client.post("/api/graphs/demo/subgraph-scores", json={"pinnedIds": ["0_2_0", "99_99_99"]})
    assert response.status_code == 422 and "99_99_99" in response.json()["detail"]


# ------------------------------------------------------------------------------------- qParams
def q_params(pins: list[str]) -> dict:
    return {"pinnedIds": pins, "supernodes": [["capital things", *pins[:2]]], "clickedId": pins[0],
            "nodeLabels": {pins[0]: "my label"}, "pruningThreshold": 0.6}  # fmt: skip


def test_qparams_are_saved_into_a_json_file_atomically(client: TestClient, graph_dir: Path) -> None:
    before = json.loads((graph_dir / "small.json").read_text())
    pins = [n["node_id"] for n in before["nodes"][:3]]
    response = client.post("/api/graphs/small/qparams", json={"qParams": q_params(pins)})
    assert response.status_code == 200, response.text
    after = json.loads((graph_dir / "small.json").read_text())
    assert after["qParams"]["pinnedIds"] == pins and after["qParams"]["pruningThreshold"] == 0.6
    assert after["qParams"]["supernodes"] == [["capital things", *pins[:2]]]
    assert {k: v for k, v in after.items() if k != "qParams"} == {
        k: v for k, v in before.items() if k != "qParams"
    }
    assert not [p for p in graph_dir.iterdir() if p.name.startswith(".small")]  # no temp file left
    assert client.get("/api/graphs/small/nodes").json()["qParams"]["nodeLabels"] == {pins[0]: "my label"}


def test_qparams_of_gz_and_safetensors_graphs(client: TestClient, graph_dir: Path) -> None:
    assert (
        client.post("/api/graphs/packed/qparams", json={"qParams": q_params(["a", "b"])}).status_code == 200
    )
    stored = json.loads(gzip.decompress((graph_dir / "packed.json.gz").read_bytes()))
    assert stored["qParams"]["pinnedIds"] == ["a", "b"]
    pins = node_ids(demo_graph())[:2]
    assert client.post("/api/graphs/demo/qparams", json={"qParams": q_params(pins)}).status_code == 200
    assert Graph.load(graph_dir / "demo.safetensors").metadata["qParams"]["pinnedIds"] == pins
    assert client.get("/api/graphs/demo/nodes").json()["qParams"]["clickedId"] == pins[0]
    assert client.get("/api/graphs/demo").json()["qParams"]["pinnedIds"] == pins  # export carries them


@pytest.mark.parametrize(
    "body",
    [
        {"qParams": {"pinnedIds": "a,b"}},
        {"qParams": {"linkType": "sideways"}},
        {"qParams": {"supernodes": [[]]}},
        {"qParams": {"pinnedIds": ["x" * 201]}},
        {"qParams": {"pinnedIds": ["a"] * 10_001}},
        {"pinnedIds": []},
        [],
    ],
)
def test_invalid_qparams_are_422_and_change_nothing(
    client: TestClient, graph_dir: Path, body: object
) -> None:
    before = (graph_dir / "small.json").read_bytes()
    response = client.post("/api/graphs/small/qparams", json=body)
    assert response.status_code == 422, response.text
    assert (graph_dir / "small.json").read_bytes() == before


def test_read_only_server_refuses_to_write(graph_dir: Path) -> None:
    app = create_app(graph_dir, read_only=True)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        before = (graph_dir / "small.json").read_bytes()
        assert client.post("/api/graphs/small/qparams", json={"qParams": {}}).status_code == 403
        assert (graph_dir / "small.json").read_bytes() == before
        assert client.get("/api/info").json()["read_only"]


# ------------------------------------------------------------------------------------- features
def test_feature_card_and_label_roundtrip(client: TestClient, store) -> None:
    card = client.get("/api/features/0/2").json()
    assert card["layer"] == 0 and card["feature"] == 2 and card["top_logits"][0] == " Austin"
    assert client.get("/api/features/0/999").status_code == 404
    response = client.put("/api/features/0/2/label", json={"label": "  Texas detector "})
    assert response.json() == {"layer": 0, "feature": 2, "label": "Texas detector"}
    assert store.user_labels[(0, 2)] == "Texas detector"
    assert client.get("/api/features/0/2").json()["user_label"] == "Texas detector"
    clerps = {n["node_id"]: n["clerp"] for n in client.get("/api/graphs/demo/nodes").json()["nodes"]}
    assert clerps["0_2_0"] == "Texas detector"  # labels flow into the graph's clerps
    assert client.put("/api/features/0/2/label", json={"label": None}).json()["label"] is None
    assert (0, 2) not in store.user_labels


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/features/-1/2", None),
        ("get", "/api/features/0/x", None),
        ("get", "/api/features/0/100000001", None),
        ("put", "/api/features/0/2/label", {"label": "x" * 501}),
        ("put", "/api/features/0/2/label", {"text": "missing label key"}),
        ("put", "/api/features/0/2/label", {"label": 5}),
    ],
)
def test_bad_feature_requests_are_422(client: TestClient, method: str, path: str, body: object) -> None:
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == 422, response.text


def test_without_a_feature_store_cards_are_404(graph_dir: Path) -> None:
    with TestClient(create_app(graph_dir), base_url="http://127.0.0.1") as client:
        response = client.get("/api/features/0/2")
        assert response.status_code == 404 and "--features" in response.json()["detail"]
        assert client.put("/api/features/0/2/label", json={"label": "x"}).status_code == 404


def test_a_store_that_cannot_open_is_503_and_graphs_still_work(graph_dir: Path) -> None:
    def broken():
        raise OSError("disk on fire")

    with TestClient(
        create_app(graph_dir, features=FeatureService(broken)), base_url="http://127.0.0.1"
    ) as client:
        response = client.get("/api/features/0/2")
        assert response.status_code == 503 and "disk on fire" in response.json()["detail"]
        assert client.get("/api/graphs/demo/nodes").status_code == 200


# ------------------------------------------------------------------------------------- steering
def test_steer_ablating_a_feature_changes_the_logits(client: TestClient, steerer) -> None:
    clean = steerer.intervener.clean(torch.tensor([0, 2, 3, 4, 8, 6]), prepend_bos=False)
    run = steerer.intervener.run(clean, [])
    acts = run.activations[1, -1]  # layer 1, last position
    feature = int(acts.argmax())
    clamp = {"layer": 1, "feature": feature, "position": -1, "op": "set", "value": 40.0}
    body = {"slug": "demo", "interventions": [clamp], "max_new_tokens": 3, "top_k": 5}
    response = client.post("/api/steer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["prompt_tokens"][1] == "The"
    before = [t["probability"] for t in result["before"]["top_logits"]]
    after = [t["probability"] for t in result["after"]["top_logits"]]
    assert len(before) == len(after) == 5 and before != pytest.approx(after)
    assert isinstance(result["before"]["text"], str) and isinstance(result["after"]["text"], str)
    assert result["interventions"] == [f"L1 @pos -1 f{feature} set 40"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"slug": "demo", "interventions": [{"layer": 1, "feature": 5000, "position": 1, "value": 1}]}, 422),
        ({"slug": "demo", "interventions": [{"layer": 9, "feature": 1, "position": 1, "value": 1}]}, 422),
        (
            {
                "slug": "demo",
                "interventions": [{"layer": 1, "feature": 1, "position": 1, "op": "explode", "value": 1}],
            },
            422,
        ),
        ({"slug": "demo", "interventions": [{"layer": 1, "feature": 1, "position": 1, "value": "NaN"}]}, 422),
        ({"slug": "demo", "interventions": []}, 422),
        (
            {
                "slug": "demo",
                "interventions": [{"layer": 1, "feature": 1, "position": 1, "value": 1}],
                "max_new_tokens": 65,
            },
            422,
        ),
        (
            {"slug": "../secret", "interventions": [{"layer": 1, "feature": 1, "position": 1, "value": 1}]},
            404,
        ),
        ({"slug": "broken", "interventions": [{"layer": 1, "feature": 1, "position": 1, "value": 1}]}, 422),
    ],
)
def test_bad_steering_requests(client: TestClient, body: dict, status: int) -> None:
    response = client.post("/api/steer", json=body)
    assert response.status_code == status, response.text


def test_steering_without_a_model_is_503(graph_dir: Path) -> None:
    with TestClient(create_app(graph_dir), base_url="http://127.0.0.1") as client:
        body = {"slug": "demo", "interventions": [{"layer": 1, "feature": 1, "position": 1, "value": 1}]}
        response = client.post("/api/steer", json=body)
        assert response.status_code == 503 and "--model" in response.json()["detail"]


# ------------------------------------------------------------------------------------- UI and docs
def test_ui_is_served_from_the_package_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "tracewire" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text
    script = client.get("/static/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/js/nope.js").status_code == 404


def test_no_ui_file_loads_anything_from_the_network() -> None:
    from tracewire.server.ui_routes import static_files

    files = static_files()
    assert {"index.html", "app.css", "js/app.js", "js/renderer.js"} <= set(files)
    for name, (body, _) in files.items():
        text = body.decode("utf-8")
        for url in ("http://", "https://", "//cdn", "unpkg", "jsdelivr"):
            assert url not in text.replace("http://www.w3.org/2000/svg", ""), f"{name} mentions {url}"


def test_openapi_documents_every_route_and_docs_are_offline(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in (
        "/api/info", "/api/graphs", "/api/graphs/{slug}", "/api/graphs/{slug}/nodes",
        "/api/graphs/{slug}/links", "/api/graphs/{slug}/subgraph-scores", "/api/graphs/{slug}/qparams",
        "/api/features/{layer}/{feature}", "/api/features/{layer}/{feature}/label", "/api/steer",
    ):  # fmt: skip
        assert path in paths
    docs = client.get("/api/docs")
    assert (
        docs.status_code == 200
        and "/api/graphs/{slug}/subgraph-scores" in docs.text
        and "cdn" not in docs.text
    )
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
