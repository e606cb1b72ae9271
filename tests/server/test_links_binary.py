"""The binary links page the explorer reads: the same links as the JSON page (whose weights are
rounded to 6 significant digits; the binary ones are float32)."""

from __future__ import annotations

import struct

import pytest
from fastapi.testclient import TestClient


def _binary_page(client: TestClient, query: str) -> tuple[int, int, list[int], list[int], list[float]]:
    response = client.get(f"/api/graphs/small/links?format=binary&{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    body = response.content
    assert len(body) % 12 == 0
    n = len(body) // 12
    sources = list(struct.unpack(f"<{n}i", body[: 4 * n]))
    targets = list(struct.unpack(f"<{n}i", body[4 * n : 8 * n]))
    weights = list(struct.unpack(f"<{n}f", body[8 * n :]))
    return (
        int(response.headers["x-links-offset"]),
        int(response.headers["x-links-total"]),
        sources,
        targets,
        weights,
    )


def test_binary_pages_hold_the_json_links_as_float32(client: TestClient) -> None:
    whole = client.get("/api/graphs/small/links").json()
    assert whole["total"] > 100
    pages = [_binary_page(client, f"offset={o}&limit=50") for o in range(0, whole["total"], 50)]
    assert [page[0] for page in pages] == list(range(0, whole["total"], 50))
    assert {page[1] for page in pages} == {whole["total"]}
    assert [s for page in pages for s in page[2]] == whole["source"]
    assert [t for page in pages for t in page[3]] == whole["target"]
    assert [w for page in pages for w in page[4]] == pytest.approx(whole["weight"], rel=1e-5, abs=1e-12)
    assert _binary_page(client, "offset=100000")[2:] == ([], [], [])
    assert client.get("/api/graphs/small/links?format=csv").status_code == 422


def test_binary_pages_follow_the_thresholds(client: TestClient) -> None:
    query = "node_threshold=0.5"
    whole = client.get(f"/api/graphs/small/links?{query}").json()
    _, total, sources, targets, _ = _binary_page(client, query)
    assert total == whole["total"] == len(sources) and (sources, targets) == (
        whole["source"],
        whole["target"],
    )
