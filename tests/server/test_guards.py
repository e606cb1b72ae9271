"""Hostile and broken requests: path traversal (raw and encoded), oversized and malformed bodies,
wrong content types and hosts, unreadable graph files. Always a clear 4xx, never a 500, and never
a byte of a file outside the served directory."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.server.asgi import raw_request
from tests.server.browser import LiveServer
from tracewire.server import create_app

SECRET = b"outside the served directory"
TRAVERSALS = [
    "../secret.json",
    "..%2Fsecret.json",
    "..%2fsecret",
    "%2e%2e%2fsecret",
    "%2E%2E/secret",
    "..%252Fsecret",
    "..%5Csecret",
    "..\\secret",
    "%2e%2e",
    "..",
    ".",
    "....//secret",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "escape",
    "escape.json",
    "secret",
    "demo%00.json",
    "demo.safetensors%00",
    "graph-metadata.json",
    "graph-metadata",
    ".demo.safetensors.tmp",
    "demo/..",
    "%C0%AE%C0%AE%2Fsecret",
    "x" * 300,
]


@pytest.fixture
def app(graph_dir: Path):
    return create_app(graph_dir, max_body_bytes=4096)


def assert_refused(response, *, allowed=(400, 404, 405, 413, 415, 421, 422)) -> None:
    assert response.status in allowed, (response.status, response.body[:200])
    assert SECRET not in response.body
    assert b"root:" not in response.body


@pytest.mark.parametrize("slug", TRAVERSALS)
def test_graph_routes_never_leave_the_directory(app, slug: str) -> None:
    for route in ("/api/graphs/{}", "/api/graphs/{}/nodes", "/api/graphs/{}/links"):
        assert_refused(raw_request(app, "GET", route.format(slug)))
    body = json.dumps({"pinnedIds": []}).encode()
    assert_refused(raw_request(app, "POST", f"/api/graphs/{slug}/subgraph-scores", body))
    assert_refused(
        raw_request(app, "POST", f"/api/graphs/{slug}/qparams", json.dumps({"qParams": {}}).encode())
    )


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../secret.json",
        "/static/..%2F..%2Fsecret.json",
        "/static/%2e%2e/%2e%2e/secret.json",
        "/static/js/../../../../../etc/passwd",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/../secret.json",
        "/%2e%2e/secret.json",
        "/static/index.html%00.js",
    ],
)
def test_static_routes_never_leave_the_package(app, path: str) -> None:
    assert_refused(raw_request(app, "GET", path))


def test_nothing_was_written_outside(app, graph_dir: Path) -> None:
    raw_request(
        app, "POST", "/api/graphs/..%2Fsecret/qparams", json.dumps({"qParams": {"clickedId": "x"}}).encode()
    )
    assert (graph_dir.parent / "secret.json").read_bytes() == b'{"secret": "' + SECRET + b'"}'
    assert sorted(p.name for p in graph_dir.parent.iterdir()) == ["graphs", "secret.json"]


def test_a_live_server_refuses_raw_traversal(graph_dir: Path) -> None:
    """Over a real socket, with the request line exactly as an attacker would send it."""
    paths = (
        "/static/../../secret.json",
        "/api/graphs/../../secret.json",
        "/api/graphs/..%2F..%2Fsecret.json/nodes",
    )
    with LiveServer(create_app(graph_dir)) as url:
        for path in paths:
            connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
            connection.putrequest("GET", path, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read()
            connection.close()
            assert 400 <= response.status < 500 and SECRET not in body, (path, response.status)


# ------------------------------------------------------------------------------------- bodies
def test_oversized_bodies_are_413_before_parsing(app) -> None:
    big = json.dumps({"pinnedIds": ["0_2_0"] * 2000}).encode()
    assert len(big) > 4096
    response = raw_request(app, "POST", "/api/graphs/demo/subgraph-scores", big)
    assert response.status == 413 and b"exceeds the limit" in response.body
    lying = raw_request(
        app, "POST", "/api/graphs/demo/subgraph-scores", b"{}", headers={"content-length": "99999999"}
    )
    assert lying.status == 413


def test_chunked_oversized_body_is_413(app) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pinnedIds": ['
        for _ in range(1000):
            yield b'"0_2_0",'
        yield b'"0_2_0"]}'

    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.post(
            "/api/graphs/demo/subgraph-scores", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413, response.text


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"pinnedIds": [}',
        b"not json",
        b"\xff\xfe\x00",
        b'{"pinnedIds": NaN}',
        b"null",
        b'"text"',
        b"[1,2]",
    ],
)
def test_malformed_json_is_422(app, body: bytes) -> None:
    for path in ("/api/graphs/demo/subgraph-scores", "/api/graphs/demo/qparams", "/api/steer"):
        response = raw_request(app, "POST", path, body)
        assert response.status in (400, 422), (path, body, response.status)
        assert "detail" in response.json()


def test_empty_body_is_422(app) -> None:
    response = raw_request(
        app, "POST", "/api/graphs/demo/subgraph-scores", headers={"content-type": "application/json"}
    )
    assert response.status == 422


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_bodies_must_be_json(app, content_type: str) -> None:
    """A cross-site form or text/plain fetch (no CORS preflight) cannot write a graph file."""
    headers = {"content-type": content_type, "content-length": "14"}
    response = raw_request(app, "POST", "/api/graphs/demo/qparams", headers=headers)
    if content_type:
        assert response.status == 415
    response = raw_request(app, "PUT", "/api/features/0/2/label", b"", headers=headers)
    assert response.status in (415, 422)


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil:8046", ""])
def test_unknown_hosts_are_refused(app, host: str) -> None:
    """DNS rebinding: a page whose own name now resolves to 127.0.0.1 still sends its name."""
    assert raw_request(app, "GET", "/api/graphs", host=host).status == 421
    for ok in ("127.0.0.1:8046", "localhost", "[::1]:8046"):
        assert raw_request(app, "GET", "/api/graphs", host=ok).status == 200


def test_methods_not_offered_are_405(app) -> None:
    assert raw_request(app, "DELETE", "/api/graphs/demo/nodes").status == 405
    assert raw_request(app, "PUT", "/api/graphs/demo/qparams", b"{}").status == 405


# ------------------------------------------------------------------------------------- broken files
def test_an_unreadable_graph_is_a_clear_422(app, graph_dir: Path) -> None:
    for method, path, body in [
        ("GET", "/api/graphs/broken", b""),
        ("GET", "/api/graphs/broken/nodes", b""),
        ("GET", "/api/graphs/broken/links", b""),
        ("POST", "/api/graphs/broken/subgraph-scores", b'{"pinnedIds": []}'),
        ("POST", "/api/graphs/broken/qparams", b'{"qParams": {}}'),
    ]:
        response = raw_request(app, method, path, body)
        assert response.status == 422, (path, response.status, response.body)
        assert b"broken.json" in response.body
    (graph_dir / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    response = raw_request(app, "GET", "/api/graphs/trunc/nodes")
    assert response.status == 422 and b"trunc.safetensors" in response.body


def test_a_rewritten_file_is_reloaded(app, graph_dir: Path) -> None:
    path = graph_dir / "small.json"
    document = json.loads(path.read_text())
    assert raw_request(app, "GET", "/api/graphs/small/nodes").json()["qParams"]["clickedId"] == ""
    document["qParams"]["clickedId"] = document["nodes"][0]["node_id"]
    time.sleep(0.01)
    path.write_text(json.dumps(document) + " ")
    assert (
        raw_request(app, "GET", "/api/graphs/small/nodes").json()["qParams"]["clickedId"]
        == document["nodes"][0]["node_id"]
    )
    path.unlink()
    assert raw_request(app, "GET", "/api/graphs/small/nodes").status == 404
