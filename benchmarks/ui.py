"""The explorer in headless Chromium on two graph shapes: first render, hover redraw, all-links draw.

Run: ``python benchmarks/ui.py [--runs 3] [--budget-ms 2000] [--graphs 10k,732k] [--label after]
[--json out.json]`` (needs Debian's ``chromium`` and the ``playwright`` package; see
tests/server/browser.py). To compare branches, run it with ``PYTHONPATH`` pointing at each
checkout's ``src`` (the UI files are served from the installed package) and different ``--label``.

Graphs (written as Neuronpedia JSON with every node and link kept, served by ``tracewire serve``'s
app on a loopback port):

* ``10k``: ``tests.server.browser.scale_graph`` (9750 features, 12 layers x 16 positions, ~105k links);
* ``732k``: 2.2k nodes and ~732k links (a dense graph like a 2,245-node Gemma graph).

Each run opens a fresh browser context and times, from navigation start: the graph data loaded
(``loadMs``) and the first frame with the graph painted (``firstRenderMs``). Run 1 is "cold" (the
server reads the file on that request); later runs are "warm". Then, in the page: a hover on the
feature with the most links until its frame is painted (``hover_ms``, and ``hover_js_ms`` for the
drawing calls alone), all links drawn (the "links" menu on "all") until painted
(``all_links_ms``), a click until the node's links are listed and a pruning-slider change until
the redrawn frame is painted. Exit status 1 if the cold first render of the first graph misses
``--budget-ms``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.graph.factory import random_graph
from tests.server.browser import LiveServer, chromium_path, launch_chromium, write_scale_graph

from tracewire.graph import keep_all, write_graph_files
from tracewire.server import create_app

PAINTED = "() => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)))"
HOVER_JS = """async () => {
  const ex = window.tracewire.explorer, d = ex.data; let best = -1, most = -1;
  for (let i = 0; i < d.nodes.length; i++) {
    const n = d.incoming(i).length + d.outgoing(i).length;
    if (d.nodeKind[i] === 0 && ex.renderer.visible[i] && n > most) { best = i; most = n; }
  }
  const started = performance.now();
  ex.renderer.setFocus({ hovered: best });
  const js = performance.now() - started;
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const painted = performance.now() - started;
  ex.renderer.setFocus({ hovered: -1 });
  return { hover_js_ms: js, hover_ms: painted, hover_links: most };
}"""
ALL_LINKS_JS = """async () => {
  const ex = window.tracewire.explorer;
  const started = performance.now();
  ex.renderer.setLinkLimit(Infinity);
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return { all_links_ms: performance.now() - started, drawn_links: ex.renderer.visibleLinks };
}"""


def dense_graph_file(directory: Path) -> Path:
    """~2.2k nodes and ~732k links, every one kept."""
    graph = random_graph(n_layers=12, n_pos=16, n_features=2000, n_targets=10, edge_density=0.671, seed=1)
    return write_graph_files(graph, "big", directory, prune=keep_all(graph))


GRAPHS = {"10k": write_scale_graph, "732k": dense_graph_file}

SLIDER_REDRAW_JS = """async () => {
  const slider = document.querySelector('#threshold');
  const started = performance.now();
  slider.value = '0.5';
  slider.dispatchEvent(new Event('input'));
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return performance.now() - started;
}"""
FIRST_FEATURE_JS = """() => { const ex = window.tracewire.explorer; const d = ex.data;
  for (let i = 0; i < d.nodes.length; i++) if (d.nodeKind[i] === 0 && ex.renderer.visible[i])
    return { id: d.nodes[i].node_id, ...ex.renderer.screenPosition(i) }; }"""


def one_run(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    page.goto(f"{url}/?graph=big")
    page.wait_for_selector('body[data-status="ready"][data-graph="big"]', timeout=120_000)
    metrics = page.evaluate("() => window.tracewire.metrics")
    sizes = page.evaluate(
        "() => [window.tracewire.explorer.data.nodes.length, window.tracewire.explorer.data.nLinks]"
    )
    target = page.evaluate(FIRST_FEATURE_JS)
    pane = page.locator("#graph-pane").bounding_box()
    started = time.perf_counter()
    page.mouse.click(pane["x"] + target["x"], pane["y"] + target["y"])
    page.wait_for_function(
        "(id) => document.querySelector('.node-facts')?.textContent.startsWith(id)", arg=target["id"]
    )
    click_ms = (time.perf_counter() - started) * 1000
    page.mouse.move(0, 0)  # off the canvas: no hover while timing
    page.keyboard.press("Escape")
    hover = page.evaluate(HOVER_JS)
    all_links = page.evaluate(ALL_LINKS_JS)
    slider_ms = page.evaluate(SLIDER_REDRAW_JS)
    context.close()
    return {
        "nodes": sizes[0],
        "links": sizes[1],
        "first_render_ms": metrics["firstRenderMs"],
        "load_ms": metrics["loadMs"],
        "click_ms": click_ms,
        "slider_redraw_ms": slider_ms,
        **hover,
        **all_links,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="page loads per graph (the first is cold)")
    parser.add_argument("--budget-ms", type=float, default=2000.0, help="cold first-render target")
    parser.add_argument("--graphs", default="10k,732k", help=f"comma-separated, of {', '.join(GRAPHS)}")
    parser.add_argument("--label", default="", help="a name for this checkout in the JSON (before/after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if chromium_path() is None:
        print("chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[str, list[dict[str, float]]] = {}
    for name in args.graphs.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            path = GRAPHS[name](Path(tmp))
            size_mb = path.stat().st_size / 1e6
            print(f"{name}: graph written in {time.perf_counter() - started:.1f} s ({size_mb:.1f} MB)")
            with LiveServer(create_app(tmp)) as url, sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                results[name] = [one_run(browser, url) for _ in range(args.runs)]
                browser.close()
        report(name, results[name])
    first = results[next(iter(results))][0]["first_render_ms"]
    if args.json:
        payload = {"label": args.label, "graphs": results, "budget_ms": args.budget_ms}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if first < args.budget_ms else 1


def report(name: str, runs: list[dict[str, float]]) -> None:
    print(f"{name}: {runs[0]['nodes']} nodes, {runs[0]['links']} links")
    print(
        f"{'run':>5s} {'first render':>13s} {'data loaded':>12s} {'hover':>8s} {'hover js':>9s} "
        f"{'all links':>10s} {'click':>8s} {'slider':>8s}"
    )
    for number, run in enumerate(runs, 1):
        kind = "cold" if number == 1 else "warm"
        print(
            f"{kind:>5s} {run['first_render_ms']:10.0f} ms {run['load_ms']:9.0f} ms {run['hover_ms']:5.0f} ms "
            f"{run['hover_js_ms']:6.1f} ms {run['all_links_ms']:7.0f} ms {run['click_ms']:5.0f} ms "
            f"{run['slider_redraw_ms']:5.0f} ms"
        )
    warm = (
        statistics.median(run["first_render_ms"] for run in runs[1:])
        if len(runs) > 1
        else runs[0]["first_render_ms"]
    )
    print(f"first render: cold {runs[0]['first_render_ms']:.0f} ms, warm median {warm:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
