"""``tracewire.show`` / ``graph.show()`` in a real Jupyter kernel: the displayed IFrame's URL serves
the graph (the explorer page, the graph's nodes and links), and a notebook page on another port may
frame it."""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.notebooks.kernel import code_notebook, html_output, kernel, run_cells
from tests.server.browser import chromium_path, launch_chromium
from tests.server.fakes import demo_graph
from tracewire.graph import prune_graph
from tracewire.graph.neuronpedia_ids import node_ids

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def fetch(url: str) -> tuple[bytes, Any]:
    with _OPENER.open(url, timeout=30) as response:
        return response.read(), response.headers


def iframe_src(html: str) -> str:
    match = re.search(r'<iframe src="([^"]+)"', html)
    assert match, html
    return match.group(1).replace("&amp;", "&")


def test_show_in_a_kernel_returns_an_iframe_whose_url_serves_the_graph(tmp_path: Path) -> None:
    graph = demo_graph()
    path = graph.save(tmp_path / "texas.safetensors")
    notebook = code_notebook(
        f"import tracewire\nview = tracewire.show({str(path)!r})\nview",
        f"from tracewire.graph import Graph\nGraph.load({str(path)!r}).show(height=500)",
        "view.stop()\nview.running",
    )
    with kernel(notebook, tmp_path) as client:
        run_cells(client, notebook, range(2))
        src = iframe_src(html_output(notebook.cells[0]))
        assert urlparse(src).hostname == "127.0.0.1"
        assert parse_qs(urlparse(src).query)["graph"] == ["texas"]
        page, headers = fetch(src)
        assert b'<canvas id="base-canvas">' in page
        assert "frame-ancestors 'self' http://localhost:*" in headers["Content-Security-Policy"]

        # the graph behind the URL: the nodes and links of the served pruning
        base = src.split("?")[0]
        nodes = json.loads(fetch(base + "api/graphs/texas/nodes")[0])
        links = json.loads(fetch(base + "api/graphs/texas/links")[0])
        prune = prune_graph(graph, 0.8, 0.98)
        ids = node_ids(graph)
        assert [n["node_id"] for n in nodes["nodes"]] == [
            ids[i] for i in prune.node_mask.nonzero().flatten().tolist()
        ]
        assert links["total"] == int(prune.edge_mask.sum())

        # graph.show() on a Graph object serves it too, in its own server
        other = iframe_src(html_output(notebook.cells[1]))
        assert other.split("?")[0] != base and other.endswith("?graph=graph")
        assert json.loads(fetch(other.split("?")[0] + "api/graphs/graph/nodes")[0])["nodes"] == nodes["nodes"]

        if chromium_path() is not None:
            framed_in_a_notebook_like_page(tmp_path, html_output(notebook.cells[0]))

        client.execute_cell(notebook.cells[2], 2)
        assert notebook.cells[2].outputs[0].data["text/plain"] == "False"


def framed_in_a_notebook_like_page(tmp_path: Path, html: str) -> None:
    """The displayed HTML in a page of another loopback origin (like Jupyter's): the explorer draws."""
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    site.mkdir()
    (site / "notebook.html").write_text(f"<!doctype html><html><body><h1>notebook</h1>{html}</body></html>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page()
            page.goto(f"http://localhost:{httpd.server_address[1]}/notebook.html")
            frame = page.frame_locator("iframe")
            frame.locator('body[data-status="ready"][data-graph="texas"]').wait_for(timeout=20_000)
            assert frame.locator("#graph-summary").inner_text().endswith("links")
            browser.close()
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


def test_outside_a_notebook_show_says_where_to_open_it(tmp_path: Path, caplog: Any) -> None:
    from tracewire.notebook import show, stop_all

    path = demo_graph().save(tmp_path / "texas.safetensors")
    with caplog.at_level("WARNING", logger="tracewire.notebook"):
        view = show(path)
    try:
        assert view.url.startswith("http://127.0.0.1:") and view.url.endswith("/?graph=texas")
        assert view.url in caplog.text and "open it in a browser" in caplog.text
        assert view.url in repr(view) and "running" in repr(view)
        listed = json.loads(fetch(view.url.split("?")[0] + "api/graphs")[0])
        assert [g["slug"] for g in listed["graphs"]] == ["texas"]
    finally:
        stop_all()
    assert not view.running and "stopped" in repr(view)
