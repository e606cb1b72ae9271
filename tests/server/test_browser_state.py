"""The explorer's state survives: a shared URL, "save" + reload, and supernodes made by dragging a
node onto another or by holding g and clicking (real Chromium, real mouse and keyboard)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.browser import LiveServer
from tests.server.fakes import FakeFeatureStore, demo_graph, write_demo_directory
from tests.server.test_browser import click_node, open_graph, page_position, shot
from tracewire.graph import Graph, prune_graph
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server import FeatureService, create_app

VIEW_STATE = """() => {
  const ex = window.tracewire.explorer, s = ex.state, d = ex.data;
  const notice = document.querySelector('#notice');
  return {
    pinned: [...s.pinned], supernodes: s.supernodes.map((g) => [g.name, ...g.members]),
    labels: { ...s.nodeLabels }, clicked: s.clickedId,
    selected: ex.selected >= 0 ? d.nodes[ex.selected].node_id : "",
    slider: Number(document.querySelector('#threshold').value), served: d.settings.node_threshold,
    shown: [...s.pinned].filter((id) => ex.renderer.visible[d.index.get(id)]),
    items: [...document.querySelectorAll('#subgraph-items li input[type=text]')].map((i) => i.value),
    notice: notice.hidden ? "" : notice.textContent,
  }; }"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh directory per test: one test's saved state cannot leak into another."""
    root = tmp_path / "graphs"
    write_demo_directory(root)
    app = create_app(root, features=FeatureService(FakeFeatureStore))
    with LiveServer(app) as url:
        yield {"url": url, "root": root}


def fresh_page(browser: Any, width: int = 1500, height: int = 950) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    return context, page, errors


def wait_ready(page: Any, slug: str) -> None:
    page.wait_for_selector(f'body[data-status="ready"][data-graph="{slug}"]', timeout=30_000)


# --------------------------------------------------------------------------------- URL and save
def test_a_shared_url_restores_pins_supernodes_labels_click_and_pruning(
    browser: Any, site: dict[str, Any]
) -> None:
    graph = demo_graph()
    ids = node_ids(graph)
    kept = prune_graph(graph, 0.9, 0.98).node_mask
    shown = [ids[i] for i in range(graph.n_features) if bool(kept[i])]
    pruned_away = next(ids[i] for i in range(graph.n_features) if not bool(kept[i]))
    logit = ids[graph.n_nodes - graph.n_targets]
    a, b, c, d = shown[:4]
    supernodes = [["alpha pair", a, b], ["beta pair", c, d]]
    # the clicked, labelled node is one that pruning at 0.9 drops: the server must keep it
    query = urllib.parse.urlencode(
        {
            "graph": "demo",
            "pinnedIds": ",".join([a, b, c, d, pruned_away, logit, "2_9999_0"]),
            "supernodes": json.dumps(supernodes),
            "clerps": json.dumps([[pruned_away, "my label"]]),
            "clickedId": pruned_away,
            "pruningThreshold": "0.9",
        }
    )
    expected = {
        "pinned": [a, b, c, d, pruned_away, logit],
        "supernodes": supernodes,
        "labels": {pruned_away: "my label"},
        "clicked": pruned_away,
        "selected": pruned_away,
        "slider": 0.9,
        "served": 0.9,
    }

    def check(page: Any, *, missing: bool) -> None:
        state = page.evaluate(VIEW_STATE)
        assert {key: state[key] for key in expected} == expected
        assert sorted(state["shown"]) == sorted(expected["pinned"])  # every pinned node is drawn
        assert state["items"] == [
            "alpha pair",
            "beta pair",
            "my label",
            page.evaluate(
                "(id) => window.tracewire.explorer.data.label(window.tracewire.explorer.data.index.get(id))",
                logit,
            ),
        ]
        assert ("2_9999_0" in state["notice"]) == missing  # a node the graph lacks is reported
        assert page.locator(".node-facts").inner_text().startswith(pruned_away)

    context, page, errors = fresh_page(browser)
    page.goto(f"{site['url']}/?{query}")
    wait_ready(page, "demo")
    check(page, missing=True)
    # the page's URL holds the same state (a reload or a copied link restores it)
    url_state = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert url_state["pinnedIds"] == [",".join(expected["pinned"])]
    assert json.loads(url_state["supernodes"][0]) == supernodes
    page.reload()
    wait_ready(page, "demo")
    check(page, missing=False)
    shot(page, "10-shared-url")

    # save, then open the bare graph URL in a fresh browser: the file's qParams restore it all
    page.click("#save-button")
    page.wait_for_selector("body[data-saved]")
    saved = Graph.load(site["root"] / "demo.safetensors").metadata["qParams"]
    assert saved["pinnedIds"] == expected["pinned"] and saved["supernodes"] == supernodes
    assert json.loads(saved["clerps"]) == [[pruned_away, "my label"]]
    assert saved["clickedId"] == pruned_away and saved["pruningThreshold"] == 0.9
    context.close()
    context, page, more_errors = fresh_page(browser)
    open_graph(page, site["url"], "demo")
    check(page, missing=False)
    context.close()
    assert not errors and not more_errors, errors + more_errors


def test_slider_past_the_served_pruning_fetches_and_keeps_the_pins(
    browser: Any, site: dict[str, Any]
) -> None:
    context, page, errors = fresh_page(browser)
    open_graph(page, site["url"], "demo")
    (first,) = page.evaluate(
        "() => { const ex = window.tracewire.explorer, d = ex.data;"
        " return [d.nodes.find((n, i) => d.nodeKind[i] === 0 && ex.renderer.visible[i]).node_id]; }"
    )
    click_node(page, first, modifier="Shift")
    page.focus("#threshold")
    page.keyboard.press("End")
    page.wait_for_function("() => window.tracewire.explorer.data.settings.node_threshold === 1")
    assert page.evaluate("() => window.tracewire.explorer.state.pinned") == [first]
    assert "pruningThreshold=1" in page.url and f"pinnedIds={first}" in page.url
    # shortcuts work after the slider was used (focus stays on it)
    page.keyboard.press("Escape")
    click_node(page, first)
    page.keyboard.press("p")
    page.wait_for_function("() => window.tracewire.explorer.state.pinned.length === 0")
    context.close()
    assert not errors, errors


# ------------------------------------------------------------------------------------ supernodes
def _served_links(url: str, query: str) -> dict[tuple[str, str], float]:
    """The links of the view the page shows, read from the API (not from the page's code)."""
    with urllib.request.urlopen(f"{url}/api/graphs/demo/nodes?{query}") as response:
        nodes = [node["node_id"] for node in json.load(response)["nodes"]]
    with urllib.request.urlopen(f"{url}/api/graphs/demo/links?{query}&limit=1000000") as response:
        page = json.load(response)
    return {(nodes[s], nodes[t]): w for s, t, w in zip(page["source"], page["target"], page["weight"])}


def _supernode_to_target(page: Any) -> list[float]:
    return page.evaluate(
        "() => [...document.querySelectorAll('#subgraph-svg line')].map((l) => Number(l.dataset.weight))"
    )


def test_drag_and_g_make_supernodes_with_summed_edges(browser: Any, site: dict[str, Any]) -> None:
    context, page, errors = fresh_page(browser)
    open_graph(page, site["url"], "demo")
    query = page.evaluate("() => window.tracewire.explorer.data.settings.query")
    links = _served_links(site["url"], query)
    # the top logit and three shown features with direct links to it
    logit, features = page.evaluate(
        """() => { const ex = window.tracewire.explorer, d = ex.data;
           const t = d.nodes.findIndex((n) => n.is_target_logit); const out = [];
           for (const e of d.incoming(t)) { const s = d.linkSource[e], id = d.nodes[s].node_id;
             if (d.nodeKind[s] === 0 && ex.renderer.visible[s] && !out.includes(id)) out.push(id); }
           return [d.nodes[t].node_id, out.slice(0, 3)]; }"""
    )
    assert len(features) == 3
    a, b, c = features
    click_node(page, logit, modifier="Shift")

    # drag a onto b: one supernode of both, its edge to the logit is the sum of theirs
    start, end = page_position(page, a), page_position(page, b)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(end["x"], end["y"], steps=8)
    page.mouse.up()
    page.wait_for_selector("#subgraph-items li.supernode")
    groups = page.evaluate("() => window.tracewire.explorer.state.supernodes.map((g) => g.members)")
    assert [sorted(g) for g in groups] == [sorted([a, b])]
    expected = links[(a, logit)] + links[(b, logit)]
    assert any(w == pytest.approx(expected, rel=1e-5) for w in _supernode_to_target(page))
    shot(page, "11-dragged-supernode")

    # rename it, then ungroup it
    page.fill("#subgraph-items li.supernode input[type='text']", "dragged")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.tracewire.explorer.state.supernodes[0]?.name === 'dragged'")
    assert "dragged" in urllib.parse.unquote(page.url)
    page.click("#subgraph-items li.supernode button")
    page.wait_for_function("() => window.tracewire.explorer.state.supernodes.length === 0")

    # hold g and click a and c (c is not pinned yet): released, they are one supernode
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.down("g")
    click_node(page, a)
    click_node(page, c)
    page.keyboard.up("g")
    page.wait_for_selector("#subgraph-items li.supernode")
    groups = page.evaluate("() => window.tracewire.explorer.state.supernodes.map((g) => g.members)")
    assert [sorted(g) for g in groups] == [sorted([a, c])]
    expected = links[(a, logit)] + links[(c, logit)]
    assert any(w == pytest.approx(expected, rel=1e-5) for w in _supernode_to_target(page))
    context.close()
    assert not errors, errors


# ---------------------------------------------------------------------------------------- search
def _feature_keys(url: str, slug: str) -> dict[tuple[int, int], str]:
    with urllib.request.urlopen(f"{url}/api/graphs/{slug}/nodes") as response:
        nodes = json.load(response)["nodes"]
    keys = {}
    for node in nodes:
        parts = node["node_id"].split("_")
        if node["feature_type"] not in ("embedding", "logit") and "error" not in node["feature_type"]:
            keys.setdefault((int(parts[0]), int(parts[1])), node["node_id"])
    return keys


def test_search_finds_a_label_in_another_graph_and_opens_it(browser: Any, site: dict[str, Any]) -> None:
    url = site["url"]
    in_small, in_demo = _feature_keys(url, "small"), _feature_keys(url, "demo")
    (layer, feature), node_id = next((key, node) for key, node in in_small.items() if key not in in_demo)
    request = urllib.request.Request(
        f"{url}/api/features/{layer}/{feature}/label",
        data=json.dumps({"label": "Lone Star detector"}).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    urllib.request.urlopen(request).close()

    context, page, errors = fresh_page(browser)
    open_graph(page, url, "demo")
    page.fill("#search", "lone star")
    hit = page.locator(f'#search-results .search-graph[data-slug="small"][data-node="{node_id}"]')
    hit.wait_for()
    assert page.locator("#search-results .search-result").count() == 1
    assert page.locator("#search-results .search-label").inner_text() == "Lone Star detector"
    hit.click()
    wait_ready(page, "small")
    state = page.evaluate(VIEW_STATE)
    assert state["clicked"] == node_id and state["selected"] == node_id
    assert page.locator(".node-facts").inner_text().startswith(node_id)
    assert "graph=small" in page.url and f"clickedId={node_id}" in page.url
    # an id finds it too; keys typed into the box are text, not shortcuts (p pins, g groups)
    page.fill("#search", "")
    page.locator("#search").press_sequentially(f"pg{layer}_{feature}")
    page.fill("#search", f"{layer}_{feature}")
    page.locator(f'#search-results .search-result[data-feature="{layer}_{feature}"]').wait_for()
    assert page.evaluate(
        "() => [window.tracewire.explorer.state.pinned.length, window.tracewire.explorer.grouping]"
    ) == [0, None]
    shot(page, "12-search")
    context.close()
    assert not errors, errors


# ------------------------------------------------------------------------------ files and the list
def test_download_of_a_file_opened_graph_and_one_list_entry_per_graph(
    browser: Any, site: dict[str, Any], tmp_path: Path
) -> None:
    context, page, errors = fresh_page(browser)
    open_graph(page, site["url"], "demo")
    options = page.locator("#graph-select option").all_inner_texts()
    assert [text.split(" — ")[0] for text in options] == [
        "demo",
        "packed",
        "small",
    ]  # broken.json: not listed
    assert "broken.json" in page.get_attribute("#graph-select", "title")
    document = json.loads((site["root"] / "small.json").read_text())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document))
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector('body[data-graph="mine.json"]')
    assert "graph=" not in page.url  # the URL no longer names a served graph
    first = page.evaluate("() => window.tracewire.explorer.data.nodes.find((n, i) => i > 0).node_id")
    page.evaluate("(id) => window.tracewire.explorer.state.togglePin(id)", first)
    with page.expect_download() as download:
        page.click("#download-link")
    saved = json.loads(Path(download.value.path()).read_text())
    assert download.value.suggested_filename == "mine.json"
    assert len(saved["nodes"]) == len(document["nodes"]) and len(saved["links"]) == len(document["links"])
    assert saved["qParams"]["pinnedIds"] == [first]
    context.close()
    assert not errors, errors


def test_a_neuronpedia_style_url_opens_here(browser: Any, site: dict[str, Any]) -> None:
    """``slug=`` (Neuronpedia's name for the graph), thresholds, error switch and link limit."""
    graph = demo_graph()
    clicked = node_ids(graph)[int(prune_graph(graph, 0.85, 0.98).node_mask.nonzero()[0])]
    query = urllib.parse.urlencode(
        {
            "slug": "demo",
            "clickedId": clicked,
            "pruningThreshold": "0.85",
            "edgeThreshold": "0.9",
            "hideErrorNodes": "true",
            "linkLimit": "5000",
            "densityThreshold": "0.5",
        }
    )
    context, page, errors = fresh_page(browser)
    page.goto(f"{site['url']}/?{query}")
    wait_ready(page, "demo")
    assert page.evaluate("() => window.tracewire.explorer.data.settings") == {
        "node_threshold": 0.85,
        "edge_threshold": 0.9,
        "query": f"node_threshold=0.85&edge_threshold=0.9&keep={clicked}",
    }
    assert page.input_value("#threshold") == "0.85" and page.input_value("#edge-threshold") == "0.9"
    assert page.is_checked("#hide-errors") and page.input_value("#link-limit") == "5000"
    assert page.evaluate("() => window.tracewire.explorer.state.clickedId") == clicked
    shown = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert shown["graph"] == ["demo"] and shown["densityThreshold"] == ["0.5"]  # kept as it came
    assert shown["hideErrorNodes"] == ["true"] and shown["linkLimit"] == ["5000"]
    context.close()
    assert not errors, errors
