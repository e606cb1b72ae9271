"""The exported HTML file in real headless Chromium, opened from ``file://`` with the network off.

What a reader of an e-mailed graph does: the graph is drawn, a clicked feature shows its card (as
the feature store has it), pins and a supernode work, and the only thing the page ever loads is
the file itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.server.browser import chromium_path, group_pinned, launch_chromium
from tests.server.test_browser import click_node
from tracewire.cli.main import app
from tracewire.dashboards import FeatureStore

if chromium_path() is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def exported(attributed: dict[str, Path], tmp_path: Path) -> Path:
    out = tmp_path / "texas.html"
    result = CliRunner().invoke(
        app, ["export-html", str(attributed["graph"]), "-o", str(out), "--features", str(attributed["store"])]
    )
    assert result.exit_code == 0, result.output
    return out


def test_file_url_offline_draw_click_card_pin_group(
    browser: Any, exported: Path, attributed: dict[str, Path]
):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
    file_url = exported.resolve().as_uri()
    blocked: list[str] = []

    def only_the_file(route: Any) -> None:
        if route.request.url == file_url:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(file_url)
    page.wait_for_selector('body[data-status="ready"][data-graph="texas"]', timeout=20_000)

    # drawn: every exported node is laid out, links are on the canvas
    shown = page.evaluate(
        "() => { const ex = window.tracewire.explorer; return {nodes: ex.data.nodes.length, "
        "visible: ex.renderer.visible.reduce((a, v) => a + v, 0), links: ex.renderer.visibleLinks}; }"
    )
    assert shown["nodes"] > 5 and shown["visible"] == shown["nodes"] and shown["links"] > 0
    painted = page.evaluate(
        """() => { const c = document.getElementById('base-canvas'); const d = c.getContext('2d')
             .getImageData(0, 0, c.width, c.height).data; let n = 0;
           for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i + 2] < 200) n++; return n; }"""
    )
    assert painted > 500, "nothing drawn on the canvas"

    # two features with a direct edge to the top logit
    first, second = page.evaluate(
        """() => { const d = window.tracewire.explorer.data;
           const logit = d.nodes.findIndex((n) => n.is_target_logit); const out = [];
           for (const e of d.incoming(logit)) { const id = d.nodes[d.linkSource[e]].node_id;
             if (d.nodeKind[d.linkSource[e]] === 0 && !out.includes(id)) out.push(id); }
           return out.slice(0, 2); }"""
    )
    click_node(page, first)
    page.wait_for_selector("#top-examples .example span.centre")
    layer, feature = (int(part) for part in first.split("_")[:2])
    with FeatureStore(attributed["store"], readonly=True) as store:
        card = store.card(layer, feature)
        assert card is not None
        expected = card.to_json()
    top_logits = page.locator("#top-logits li").all_inner_texts()
    assert top_logits and len(top_logits) == min(8, len(expected["top_logits"]))
    assert page.locator("#histogram rect").count() > 0
    assert f"L{layer} #{feature}" in page.inner_text("#feature-card .card-stats >> nth=0")

    # pin both (shift-click on the canvas) and group them with "g"
    click_node(page, first, modifier="Shift")
    click_node(page, second, modifier="Shift")
    page.wait_for_function("() => document.querySelectorAll('#subgraph-items li').length === 2")
    # scores need the server, and the panel says so
    page.wait_for_function(
        "() => document.getElementById('subgraph-panel').textContent.includes('tracewire serve')"
    )
    group_pinned(page, [first, second], "Texas things")

    assert requests == [file_url], requests
    assert blocked == []
    assert not errors, errors
    context.close()
