"""End-to-end: the explorer in real headless Chromium against a live server.

Skipped (with the reason) only when Chromium or the ``playwright`` package is missing; ``.ci/run``
installs both. Screenshots go to ``tests/server/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.browser import LiveServer, chromium_path, launch_chromium, write_scale_graph
from tests.server.fakes import FakeFeatureStore, write_demo_directory
from tracewire.graph import Graph, ScoreContext
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server import FeatureService, create_app

if chromium_path() is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

ARTIFACTS = Path(__file__).parent / "artifacts"
#: Generous: the benchmark (benchmarks/ui.py) holds the real < 2 s target on an idle machine.
FIRST_RENDER_LIMIT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, steerer) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("site") / "graphs"
    write_demo_directory(root)
    store = FakeFeatureStore()
    app = create_app(root, features=FeatureService(lambda: store), steerer=steerer)
    with LiveServer(app) as url:
        yield {"url": url, "root": root, "store": store}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("request", lambda request: _local(request.url) or errors.append(f"requested {request.url}"))
    yield page
    context.close()
    assert not errors, errors


def _local(url: str) -> bool:
    """Every request the UI makes goes to the local server (or is a data:/blob: URL)."""
    return url.startswith(("http://127.0.0.1", "data:", "blob:"))


def open_graph(page: Any, url: str, slug: str) -> None:
    page.goto(f"{url}/?graph={slug}")
    page.wait_for_selector(f'body[data-status="ready"][data-graph="{slug}"]', timeout=20_000)


def node_index(page: Any, node_id: str) -> int:
    return page.evaluate("(id) => window.tracewire.explorer.data.index.get(id) ?? -1", node_id)


def click_node(page: Any, node_id: str, *, modifier: str | None = None) -> None:
    """A real mouse click at the node's position on the canvas."""
    position = page.evaluate(
        "(id) => { const ex = window.tracewire.explorer; "
        "return ex.renderer.screenPosition(ex.data.index.get(id)); }",
        node_id,
    )
    assert position, f"node {node_id} is not shown"
    pane = page.locator("#graph-pane").bounding_box()
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.click(pane["x"] + position["x"], pane["y"] + position["y"])
    if modifier:
        page.keyboard.up(modifier)


def visible_feature_ids(page: Any, count: int) -> list[str]:
    return page.evaluate(
        """(count) => { const ex = window.tracewire.explorer; const d = ex.data; const out = [];
           for (let i = 0; i < d.nodes.length && out.length < count; i++)
             if (d.nodeKind[i] === 0 && ex.renderer.visible[i]) out.push(d.nodes[i].node_id);
           return out; }""",
        count,
    )


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


# ------------------------------------------------------------------------------------- walkthrough
def test_walkthrough_click_card_pin_group_score_steer_save_reload(page: Any, site: dict[str, Any]) -> None:
    url, root, store = site["url"], site["root"], site["store"]
    open_graph(page, url, "demo")
    # two shown features with direct edges to the top logit (so the supernode has an edge to it)
    first, second = page.evaluate(
        """() => { const ex = window.tracewire.explorer; const d = ex.data;
           const logit = d.nodes.findIndex((n) => n.is_target_logit); const out = [];
           for (const e of d.incoming(logit)) {
             const s = d.linkSource[e], id = d.nodes[s].node_id;
             if (d.nodeKind[s] === 0 && ex.renderer.visible[s] && !out.includes(id)) out.push(id);
           }
           return out.slice(0, 2); }"""
    )

    # click a node: its links, sorted by |weight|
    click_node(page, first)
    page.wait_for_function(
        "(id) => document.querySelector('.node-facts')?.textContent.startsWith(id)", arg=first
    )
    outputs = page.locator("#outputs-list li .weight").all_inner_texts()
    inputs = page.locator("#inputs-list li .weight").all_inner_texts()
    assert outputs and inputs
    magnitudes = [abs(float(w)) for w in outputs]
    assert magnitudes == sorted(magnitudes, reverse=True)
    index = node_index(page, first)
    assert len(outputs) == page.evaluate("(i) => window.tracewire.explorer.data.outgoing(i).length", index)

    # the feature card: examples, histogram, logits; edit the label
    page.wait_for_selector("#top-examples .example span.centre")
    assert page.locator("#histogram rect").count() == 5
    assert page.locator("#top-logits li").first.inner_text() == "·Austin"
    page.fill("#label-input", "Texas detector")
    page.click("#label-save")
    page.wait_for_function("() => document.querySelector('#node-title').textContent === 'Texas detector'")
    layer, feature = (int(part) for part in first.split("_")[:2])
    assert store.user_labels[(layer, feature)] == "Texas detector"
    shot(page, "01-node-and-card")

    # pin two nodes (shift-click on the canvas) and read the live scores
    click_node(page, first, modifier="Shift")
    click_node(page, second, modifier="Shift")
    page.wait_for_function("() => document.querySelectorAll('#subgraph-items li').length === 2")
    page.wait_for_selector("#score-replacement")
    graph = Graph.load(root / "demo.safetensors")
    ids = node_ids(graph)
    expected = ScoreContext(graph).subgraph_scores([ids.index(first), ids.index(second)])
    assert float(page.inner_text("#score-replacement")) == pytest.approx(expected.replacement, abs=1e-3)
    assert float(page.inner_text("#score-completeness")) == pytest.approx(expected.completeness, abs=1e-3)

    # a third pin (the top logit), then group the two features into a supernode with "g"
    logit = page.evaluate("() => window.tracewire.explorer.data.nodes.find((n) => n.is_target_logit).node_id")
    click_node(page, logit, modifier="Shift")
    page.wait_for_function("() => document.querySelectorAll('#subgraph-items li').length === 3")
    for node_id in (first, second):
        page.check(f'#subgraph-items li[data-key="{node_id}"] input[type="checkbox"]')
    page.fill("#group-name", "Texas things")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("g")
    page.wait_for_selector("#subgraph-items li.supernode")
    assert page.locator("#subgraph-items li.supernode input[type='text']").input_value() == "Texas things"
    # the supernode's edge to the logit is the sum of its members' edges
    drawn = page.evaluate(
        "() => [...document.querySelectorAll('#subgraph-svg line')].map((l) => Number(l.dataset.weight))"
    )
    members_to_logit = page.evaluate(
        """([a, b, t]) => { const d = window.tracewire.explorer.data; let s = 0;
           for (const id of [a, b]) for (const e of d.outgoing(d.index.get(id)))
             if (d.linkTarget[e] === d.index.get(t)) s += d.linkWeight[e];
           return s; }""",
        [first, second, logit],
    )
    assert members_to_logit != 0 and any(w == pytest.approx(members_to_logit, rel=1e-5) for w in drawn)
    shot(page, "02-subgraph")

    # steer: add the clicked feature, clamp it high, run, and see the logits move
    click_node(page, second)
    page.click("#steer-add-button")
    page.select_option("#steer-rows select >> nth=0", "set")
    page.fill("#steer-rows input.steer-value", "40")
    page.fill("#steer-tokens", "3")
    page.click("#steer-run")
    page.wait_for_selector("#steer-after tr")
    before = page.locator("#steer-before tr").all_inner_texts()
    after = page.locator("#steer-after tr").all_inner_texts()
    assert len(before) == len(after) == 10 and before != after
    assert page.locator("#steer-text-after").count() == 1
    shot(page, "03-steering")

    # save into the graph file, reload, and find the state again
    page.click("#save-button")
    page.wait_for_selector("body[data-saved]")
    saved = Graph.load(root / "demo.safetensors").metadata["qParams"]
    assert set(saved["pinnedIds"]) == {first, second, logit}
    assert saved["supernodes"] == [["Texas things", first, second]]
    assert saved["clickedId"] == second
    page.reload()
    page.wait_for_selector('body[data-status="ready"][data-graph="demo"]')
    page.wait_for_selector("#subgraph-items li.supernode")
    assert page.locator("#subgraph-items li").count() == 2  # the supernode and the logit
    assert page.locator("#subgraph-items li.supernode input[type='text']").input_value() == "Texas things"
    assert page.evaluate("() => window.tracewire.explorer.state.clickedId") == second
    assert page.is_enabled("#steer-add-button")
    page.wait_for_selector("#score-replacement")
    shot(page, "04-reloaded")


def test_pruning_slider_and_error_nodes(page: Any, site: dict[str, Any]) -> None:
    open_graph(page, site["url"], "small")  # a JSON graph with every node, filtered in the browser
    shown = "() => window.tracewire.explorer.renderer.visible.reduce((a, v) => a + v, 0)"
    all_nodes = page.evaluate(shown)
    page.focus("#threshold")
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    assert page.inner_text("#threshold-value") == f"{float(page.input_value('#threshold')):.2f}"
    fewer = page.evaluate(shown)
    assert fewer < all_nodes
    expected = page.evaluate(
        """() => {
             const d = window.tracewire.explorer.data;
             const t = Number(document.querySelector('#threshold').value);
             let n = 0;
             for (let i = 0; i < d.nodes.length; i++) n += d.nodeKind[i] >= 2 || !(d.influence[i] > t + 1e-9);
             return n;
           }"""
    )
    assert fewer == expected  # embeddings and logits always, others by cumulative influence
    errors_shown = """() => {
        const ex = window.tracewire.explorer;
        let n = 0;
        ex.data.nodeKind.forEach((k, i) => { n += k === 1 && ex.renderer.visible[i]; });
        return n;
      }"""
    page.keyboard.press("End")
    assert page.evaluate(errors_shown) > 0
    page.check("#hide-errors")
    assert page.evaluate(errors_shown) == 0

    # a .safetensors graph: sliding past the server's pruning fetches a less pruned graph
    open_graph(page, site["url"], "demo")
    pruned = page.evaluate("() => window.tracewire.explorer.data.nodes.length")
    page.focus("#threshold")
    page.keyboard.press("End")
    page.wait_for_function("() => window.tracewire.explorer.data.settings.node_threshold === 1")
    assert page.evaluate("() => window.tracewire.explorer.data.nodes.length") > pruned


def test_open_a_neuronpedia_json_file(page: Any, site: dict[str, Any], tmp_path: Path) -> None:
    open_graph(page, site["url"], "demo")
    document = json.loads((site["root"] / "small.json").read_text())
    document["metadata"]["slug"] = "uploaded"
    path = tmp_path / "uploaded.json"
    path.write_text(json.dumps(document))
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector('body[data-graph="uploaded.json"]')
    assert page.evaluate("() => window.tracewire.explorer.data.nodes.length") == len(document["nodes"])
    assert page.evaluate("() => window.tracewire.explorer.data.nLinks") == len(document["links"])
    assert "uploaded.json" in page.inner_text("#status")


# ------------------------------------------------------------------------------------- scale
def test_ten_thousand_nodes_render_and_answer_a_click(browser: Any, tmp_path: Path) -> None:
    root = tmp_path / "scale"
    write_scale_graph(root)
    with LiveServer(create_app(root)) as url:
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        page = context.new_page()
        page.goto(f"{url}/?graph=big")
        page.wait_for_selector('body[data-status="ready"][data-graph="big"]', timeout=60_000)
        metrics = page.evaluate("() => window.tracewire.metrics")
        n_nodes = page.evaluate("() => window.tracewire.explorer.data.nodes.length")
        n_links = page.evaluate("() => window.tracewire.explorer.data.nLinks")
        assert n_nodes >= 9_900 and n_links >= 100_000
        (node_id,) = visible_feature_ids(page, 1)
        started = time.perf_counter()
        click_node(page, node_id)
        page.wait_for_function(
            "(id) => document.querySelector('.node-facts')?.textContent.startsWith(id)", arg=node_id
        )
        click_ms = (time.perf_counter() - started) * 1000
        shot(page, "05-scale")
        context.close()
    print(
        f"\n10k-node graph ({n_nodes} nodes, {n_links} links): first render "
        f"{metrics['firstRenderMs']:.0f} ms after navigation (data load {metrics['loadMs']:.0f} ms), "
        f"click answered in {click_ms:.0f} ms"
    )
    assert metrics["firstRenderMs"] < FIRST_RENDER_LIMIT_MS
    assert click_ms < 5_000


def test_zoom_pan_then_click_and_pin_with_the_keyboard(page: Any, site: dict[str, Any]) -> None:
    open_graph(page, site["url"], "demo")
    pane = page.locator("#graph-pane").bounding_box()
    centre = {"x": pane["width"] / 2, "y": pane["height"] / 2}
    node_id = page.evaluate(
        """(c) => {
           const ex = window.tracewire.explorer, d = ex.data;
           let best = null, bestD = Infinity;
           for (let i = 0; i < d.nodes.length; i++) {
             if (d.nodeKind[i] !== 0 || !ex.renderer.visible[i]) continue;
             const p = ex.renderer.screenPosition(i); const dist = Math.hypot(p.x - c.x, p.y - c.y);
             if (dist < bestD) { bestD = dist; best = d.nodes[i].node_id; }
           }
           return best; }""",
        centre,
    )
    page.mouse.move(pane["x"] + centre["x"], pane["y"] + centre["y"])
    page.mouse.wheel(0, -300)  # zoom in around the pointer
    page.mouse.down()
    page.mouse.move(pane["x"] + centre["x"] + 40, pane["y"] + centre["y"] + 25, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)  # the redraw after the gesture
    view = page.evaluate("() => window.tracewire.explorer.renderer.view")
    assert view["k"] > 1.2 and view["tx"] != 0
    position = page.evaluate(
        "(id) => { const ex = window.tracewire.explorer; "
        "return ex.renderer.screenPosition(ex.data.index.get(id)); }",
        node_id,
    )
    assert 0 < position["x"] < pane["width"] and 0 < position["y"] < pane["height"]
    click_node(page, node_id)  # hit-testing under the zoomed, panned view
    page.wait_for_function(
        "(id) => document.querySelector('.node-facts')?.textContent.startsWith(id)", arg=node_id
    )
    # "p" toggles the pin of the clicked node (the demo may hold pins saved by another test)
    was_pinned = page.evaluate("(id) => window.tracewire.explorer.state.isPinned(id)", node_id)
    page.keyboard.press("p")
    page.wait_for_function(
        "([id, was]) => window.tracewire.explorer.state.isPinned(id) === !was", arg=[node_id, was_pinned]
    )
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.tracewire.explorer.selected") == -1
