"""The page at 1280x720 and 1920x1080: nothing below the fold with a node clicked and a subgraph
pinned, no space reserved for empty panels, subgraph labels that do not overlap (asserted on
element boxes; screenshots in tests/server/artifacts/ to look at)."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.server.browser import LiveServer
from tests.server.fakes import FakeFeatureStore, demo_graph, write_demo_directory
from tests.server.test_browser import shot
from tracewire.graph import Graph, prune_graph
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server import FeatureService, create_app

PANELS = ["#toolbar", "#graph-pane", "#node-panel", "#feature-card", "#steer-panel", "#subgraph-panel"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("layout") / "graphs"
    write_demo_directory(root)
    with LiveServer(create_app(root, features=FeatureService(FakeFeatureStore))) as url:
        yield url


def _state_query() -> str:
    """Six pins (two supernodes), a clicked feature: a busy but ordinary view."""
    graph = demo_graph()
    ids = node_ids(graph)
    kept = prune_graph(graph, 0.8, 0.98).node_mask
    shown = [ids[i] for i in range(graph.n_features) if bool(kept[i])]
    logits = [ids[i] for i in range(graph.n_nodes - graph.n_targets, graph.n_nodes)]
    pins = shown[:8] + logits[:2]
    supernodes = [["first group", shown[0], shown[1]], ["second group", shown[2], shown[3]]]
    return urllib.parse.urlencode(
        {
            "graph": "demo",
            "pinnedIds": ",".join(pins),
            "supernodes": json.dumps(supernodes),
            "clickedId": shown[4],
        }
    )


def _boxes(page: Any, selectors: list[str]) -> dict[str, dict[str, float]]:
    return {selector: page.locator(selector).bounding_box() for selector in selectors}


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and (a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])
    )


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080)])
def test_everything_fits_with_a_node_clicked_and_a_subgraph(
    browser: Any, site: str, width: int, height: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(f"{site}/?{_state_query()}")
    page.wait_for_selector('body[data-status="ready"][data-graph="demo"]', timeout=30_000)
    page.wait_for_selector("#top-examples .example")
    page.wait_for_selector("#score-replacement")
    shot(page, f"20-layout-{width}x{height}")

    boxes = _boxes(page, PANELS)
    for selector, box in boxes.items():  # no panel below the fold or past the right edge
        assert box is not None, selector
        assert box["y"] + box["height"] <= height + 0.5 and box["x"] + box["width"] <= width + 0.5, selector
    graph = boxes["#graph-pane"]
    assert graph["width"] >= 0.6 * width and graph["height"] >= 0.4 * height
    # what a click is for is in view inside its panel: the first input link, the first example
    for inner, panel in (("#inputs-list li", "#node-panel"), ("#top-examples .example", "#feature-card")):
        box, outer = page.locator(inner).first.bounding_box(), boxes[panel]
        assert outer["y"] <= box["y"] and box["y"] + min(box["height"], 16) <= outer["y"] + outer["height"], (
            inner
        )

    # subgraph labels (items and axes) do not overlap each other
    labels = page.evaluate(
        """() => [...document.querySelectorAll('#subgraph-svg text')].map((t) => {
             const r = t.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height,
             text: t.textContent}; })"""
    )
    assert len(labels) >= 8
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not _overlaps(a, b), (a, b)
    assert page.locator("#subgraph-svg .axis-label.token").count() >= 2  # a token axis
    context.close()


def test_empty_panels_reserve_no_space_and_panels_collapse_and_resize(browser: Any, site: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.goto(f"{site}/?graph=small")
    page.wait_for_selector('body[data-status="ready"][data-graph="small"]', timeout=30_000)
    subgraph = page.locator("#subgraph-panel").bounding_box()
    assert subgraph["height"] < 80  # nothing pinned: one line
    graph = page.locator("#graph-pane").bounding_box()
    assert graph["height"] >= 0.75 * 720
    # collapse the node panel: the feature card takes the room
    card_before = page.locator("#feature-card").bounding_box()["height"]
    page.click("#node-panel > h2")
    page.wait_for_function("() => document.querySelector('#node-panel').classList.contains('collapsed')")
    assert page.locator("#feature-card").bounding_box()["height"] > card_before
    # drag the side splitter left: the side column widens, the graph narrows
    splitter = page.locator("#side-splitter").bounding_box()
    side_before = page.locator("#side").bounding_box()["width"]
    page.mouse.move(splitter["x"] + 3, splitter["y"] + 200)
    page.mouse.down()
    page.mouse.move(splitter["x"] - 120, splitter["y"] + 200, steps=5)
    page.mouse.up()
    assert page.locator("#side").bounding_box()["width"] == pytest.approx(side_before + 123, abs=8)
    page.wait_for_function(
        "(w) => window.tracewire.explorer.renderer.cssWidth < w",
        arg=graph["width"] - 60,
    )
    shot(page, "21-layout-empty-1280x720")
    context.close()


def _faint(scale: float) -> Graph:
    """The demo graph with its feature edges scaled down: its influence is in errors and tokens."""
    graph = demo_graph()
    from_feature = graph.edge_sources < graph.n_features
    weights = torch.where(from_feature, graph.edge_weights * scale, graph.edge_weights)
    return dataclasses.replace(graph, edge_weights=weights)


def test_the_first_view_shows_features_or_says_why_none_survive(browser: Any, tmp_path: Path) -> None:
    root = tmp_path / "faint"
    root.mkdir()
    _faint(0.03).save(root / "faint.safetensors")  # no feature at 0.80, one at 0.95
    _faint(0.01).save(root / "fainter.safetensors")  # none even at 0.95
    assert not bool(prune_graph(_faint(0.03), 0.8, 0.98).node_mask[: demo_graph().n_features].any())
    features_shown = (
        "() => { const ex = window.tracewire.explorer; let n = 0;"
        " ex.data.nodeKind.forEach((k, i) => { n += k === 0 && ex.renderer.visible[i]; }); return n; }"
    )
    with LiveServer(create_app(root)) as url:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        page.goto(f"{url}/?graph=faint")
        page.wait_for_function("() => window.tracewire?.explorer?.data?.settings.node_threshold === 0.95")
        page.wait_for_selector('body[data-status="ready"][data-graph="faint"]')
        assert page.evaluate(features_shown) >= 1
        assert "No feature survived the default pruning (0.80)" in page.inner_text("#notice")
        page.goto(f"{url}/?graph=fainter")
        page.wait_for_function("() => window.tracewire?.explorer?.data?.settings.node_threshold === 0.95")
        page.wait_for_selector('body[data-status="ready"][data-graph="fainter"]')
        page.wait_for_function("() => document.querySelector('#notice').textContent.includes('slider right')")
        assert page.evaluate(features_shown) == 0
        shot(page, "22-no-feature-survives")
        context.close()


def test_very_many_links_are_drawn_as_bundles_with_the_summed_weights(browser: Any, site: str) -> None:
    """The level of detail for dense graphs, forced on the demo graph: each bundle is the sum of the
    drawn links between two (layer, position) cells, positive and negative apart."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.goto(f"{site}/?graph=demo")
    page.wait_for_selector('body[data-status="ready"][data-graph="demo"]', timeout=30_000)
    bundles, n_pos, n_layers = page.evaluate(
        """() => { const ex = window.tracewire.explorer; ex.renderer.bundleAbove = 10;
           ex.renderer.refresh(); return [ex.renderer.bundles, ex.data.nPos, ex.data.nLayers]; }"""
    )
    nodes, links = page.evaluate(
        """() => { const ex = window.tracewire.explorer, d = ex.data; const nodes = d.nodes.map((n, i) =>
             ({ type: n.feature_type, layer: n.layer, ctx: n.ctx_idx, shown: !!ex.renderer.visible[i] }));
           const links = []; for (let e = 0; e < d.nLinks; e++)
             links.push([d.linkSource[e], d.linkTarget[e], d.linkWeight[e]]);
           return [nodes, links]; }"""
    )

    def cell(node: dict[str, Any]) -> int:
        layer = (
            -1 if node["type"] == "embedding" else n_layers if node["type"] == "logit" else int(node["layer"])
        )
        return (layer + 1) * n_pos + int(node["ctx"])

    expected: dict[tuple[int, int], list[float]] = {}
    for source, target, weight in links:
        if nodes[source]["shown"] and nodes[target]["shown"]:
            sums = expected.setdefault((cell(nodes[source]), cell(nodes[target])), [0.0, 0.0])
            sums[weight < 0] += weight
    assert len(bundles) == len(expected) < len(links)
    for bundle in bundles:
        positive, negative = expected[(bundle["source"], bundle["target"])]
        assert bundle["positive"] == pytest.approx(positive, rel=1e-6)
        assert bundle["negative"] == pytest.approx(negative, rel=1e-6)
    shot(page, "23-bundled-links")
    context.close()


LINK_PIXELS_JS = """() => {
  const ex = window.tracewire.explorer, d = ex.data, r = ex.renderer;
  r.setLinkLimit(Infinity);
  const ctx = r.base.getContext("2d"), dpr = r.dpr, at = (v) => Math.round(v * dpr);
  const order = Array.from(d.linkWeight.keys())
    .filter((e) => r.visible[d.linkSource[e]] && r.visible[d.linkTarget[e]])
    .sort((a, b) => Math.abs(d.linkWeight[b]) - Math.abs(d.linkWeight[a]));
  const shown = []; for (let i = 0; i < d.nodes.length; i++) if (r.visible[i]) shown.push(i);
  const clear = (p) => shown.every((i) => { const q = r.screenPosition(i);
    return Math.hypot(q.x - p.x, q.y - p.y) > r.layout.r[i] * r.view.k + 4; });
  const picked = { pos: [], neg: [] };
  for (const e of order) {
    const key = d.linkWeight[e] < 0 ? "neg" : "pos";
    if (picked[key].length >= 4) continue;
    const a = r.screenPosition(d.linkSource[e]), b = r.screenPosition(d.linkTarget[e]);
    const points = [0.35, 0.5, 0.65].map((f) => ({ x: a.x + f * (b.x - a.x), y: a.y + f * (b.y - a.y) }));
    if (!points.every(clear)) continue;
    const pixel = (p) => Array.from(ctx.getImageData(at(p.x), at(p.y), 1, 1).data);
    picked[key].push(points.map(pixel));
  }
  return { webgl: !!r.webgl, picked, drawn: r.visibleLinks, links: d.nLinks, bundles: r.bundles };
}"""


@pytest.mark.parametrize("query", ["&links=webgl", "&links=canvas"], ids=["webgl", "canvas-2d"])
def test_links_are_painted_with_their_sign_colour_by_webgl_and_canvas(
    browser: Any, site: str, query: str
) -> None:
    """Both link layers paint every link: on the base canvas, the strongest positive links are blue
    and the strongest negative ones red along their length (points clear of every node)."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.goto(f"{site}/?graph=demo{query}")
    page.wait_for_selector('body[data-status="ready"][data-graph="demo"]', timeout=30_000)
    result = page.evaluate(LINK_PIXELS_JS)
    assert result["webgl"] is query.endswith("webgl")  # headless Chromium has WebGL (SwiftShader)
    assert result["drawn"] > 0 and result["bundles"] is None
    assert len(result["picked"]["pos"]) >= 2 and len(result["picked"]["neg"]) >= 2
    for sign, samples in result["picked"].items():
        for link in samples:
            tinted = [(b - r if sign == "pos" else r - b) > 25 for r, _, b, _ in link]
            assert sum(tinted) >= 2, f"{sign} link pixels {link}"
    shot(page, f"24-links-{query.split('=')[1]}")
    context.close()
