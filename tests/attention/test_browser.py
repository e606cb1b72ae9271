"""The explorer's attention panel in real headless Chromium: click a node, split a link by head,
then a head's QK pairs, then a pair's node (numbers checked against the library)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tests.interventions.setups import setup as tiny_setup
from tests.server.browser import LiveServer, chromium_path, launch_chromium
from tracewire.attention import TraceContext, head_loadings, qk_attribution
from tracewire.attribution.engine import attribute
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.interventions.api import Intervener
from tracewire.server import Steerer, create_app

if chromium_path() is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from tests.server.test_browser import click_node, open_graph  # noqa: E402  (after the skips)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("attention-site")
    lm, ts = tiny_setup("llama", "skip")
    graph = attribute(torch.tensor([0, 2, 3, 4, 8, 6]), lm, ts, progress=False)
    graph.save(root / "tiny.safetensors")
    steerer = Steerer(Intervener(lm, ts))
    with LiveServer(create_app(root, steerer=steerer)) as url:
        yield {"url": url, "graph": graph, "ctx": TraceContext.build(graph, lm, ts)}
    steerer.close()


def test_click_link_heads_then_qk_pairs_then_a_node(site: dict[str, Any]) -> None:
    graph, ctx = site["graph"], site["ctx"]
    ids = node_ids(graph)
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_context(viewport={"width": 1500, "height": 950}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        open_graph(page, site["url"], "tiny")
        logit = ids[graph.target_offset]
        click_node(page, logit)
        page.wait_for_selector("#attention-links li")
        # the strongest incoming link of the logit, split by head
        source_id = page.evaluate(
            """() => { const d = window.tracewire.explorer.data, i = window.tracewire.explorer.selected;
               const w = (e) => Math.abs(d.linkWeight[e]);
               const links = Array.from(d.incoming(i)).sort((a, b) => w(b) - w(a));
               return d.nodes[d.linkSource[links[0]]].node_id; }"""
        )
        page.click("#attention-links li >> nth=0 >> button.attention-heads")
        page.wait_for_selector("#attention-head-list li")
        target, source = graph.target_offset, ids.index(source_id)
        edge = int(((graph.edge_targets == target) & (graph.edge_sources == source)).nonzero()[0, 0])
        expected = head_loadings(graph, ctx, edges=[edge], progress=False)
        best = expected.top_heads(0, 1)[0]
        first = page.locator("#attention-head-list li >> nth=0").inner_text()
        assert f"layer {best['layer']} head {best['head']}" in first
        assert float(first.split()[0]) == pytest.approx(best["value"], abs=2e-3)
        # that head's QK attribution: query = the logit's position, key = the source's
        page.click("#attention-head-list li >> nth=0")
        page.wait_for_selector("#attention-pairs li")
        key = int(graph.node_layer_pos()[1][source])
        (qk,) = qk_attribution(
            graph, ctx, layer=best["layer"], head=best["head"], query=graph.n_pos - 1, keys=[key]
        )
        facts = page.locator("#attention-qk .node-facts").inner_text()
        assert facts.startswith(f"score {qk.score:.3f}")
        # a pair's node is a link to that node
        link = page.locator("#attention-pairs a[data-node] >> nth=0")
        node_id = link.get_attribute("data-node")
        link.click()
        page.wait_for_function(
            "(id) => window.tracewire.explorer.data.nodes[window.tracewire.explorer.selected].node_id === id",
            arg=node_id,
        )
        browser.close()
    assert not errors, errors
