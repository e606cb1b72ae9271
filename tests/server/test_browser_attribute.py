"""Attribution from the page: a prompt typed in the explorer runs ``tracewire attribute`` in a
worker process on the server, the progress bar moves, the new graph opens, and it has the same
edges as the command line's graph; a cancelled run leaves no file behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.factories.assets import write_tiny_model_and_transcoders
from tests.server.browser import LiveServer
from tests.server.test_browser import shot
from tracewire.graph.graph import Graph
from tracewire.server import create_app
from tracewire.server.attribution_jobs import AttributionJobs, AttributionSettings

PROMPT = "The capital of France is"
SETTINGS = ["--target", "Paris", "--max-feature-nodes", "20"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model_and_transcoders(tmp_path_factory.mktemp("attribute-assets"))


@pytest.fixture
def served(assets: tuple[Path, Path], tmp_path: Path) -> Iterator[dict[str, Any]]:
    model, transcoders = assets
    root = tmp_path / "graphs"
    root.mkdir()
    jobs = AttributionJobs(AttributionSettings(str(model), str(transcoders)))
    with LiveServer(create_app(root, attribution=jobs)) as url:
        yield {"url": url, "root": root}
    jobs.close()


def _cli_graph(assets: tuple[Path, Path], output: Path) -> Graph:
    """``tracewire attribute`` as a user runs it (a separate process)."""
    model, transcoders = assets
    command = [sys.executable, "-m", "tracewire.cli.main", "attribute", PROMPT, "-m", str(model)]
    command += ["-t", str(transcoders), "-o", str(output), *SETTINGS]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return Graph.load(output)


def test_a_prompt_typed_in_the_page_makes_the_cli_graph(
    browser: Any, served: dict[str, Any], assets: tuple[Path, Path], tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served["url"])
    page.wait_for_selector('body[data-status="ready"]')
    page.click("#attribute-button")
    page.fill("#attr-prompt", PROMPT)
    page.fill("#attr-targets", "Paris")
    page.fill("#attr-budget", "20")
    page.click("#attr-run")
    page.wait_for_selector('#attribute-box[data-job-state="done"]', timeout=180_000)
    slug = page.evaluate("() => window.tracewire.explorer.attribution.job.slug")
    page.wait_for_selector(f'body[data-status="ready"][data-graph="{slug}"]', timeout=30_000)
    shot(page, "30-attributed-from-the-page")

    seen = page.evaluate("() => window.tracewire.explorer.attribution.progressSeen")
    distinct = sorted(set(seen))
    assert seen == sorted(seen) and distinct[0] == 0 and distinct[-1] == 1 and len(distinct) >= 4, seen
    assert page.evaluate("() => window.tracewire.explorer.data.nodes.length") > 0

    from_page = Graph.load(served["root"] / f"{slug}.safetensors")
    from_cli = _cli_graph(assets, tmp_path / "cli.safetensors")
    assert from_page.target_labels == from_cli.target_labels == ["Paris"]
    assert torch.equal(from_page.edge_sources, from_cli.edge_sources)
    assert torch.equal(from_page.edge_targets, from_cli.edge_targets)
    torch.testing.assert_close(from_page.edge_weights, from_cli.edge_weights, rtol=1e-6, atol=1e-9)
    assert from_page.n_edges > 0

    # cancel a second run while it works: it ends, and the directory is as it was
    before = sorted(os.listdir(served["root"]))
    if page.locator("#attribute-box").is_hidden():
        page.click("#attribute-button")
    page.fill("#attr-prompt", "The capital of Texas is")
    page.click("#attr-run")
    page.wait_for_selector('#attribute-box[data-job-state="running"]')
    page.click("#attr-cancel")
    page.wait_for_selector('#attribute-box[data-job-state="cancelled"]', timeout=60_000)
    assert sorted(os.listdir(served["root"])) == before
    context.close()
    assert not errors, errors


def test_attribution_needs_a_model_and_a_writable_server(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path), base_url="http://127.0.0.1") as client:
        assert client.get("/api/info").json()["attribution"] is False
        response = client.post("/api/attribution/jobs", json={"prompt": "The capital"})
        assert response.status_code == 503 and "--model" in response.json()["detail"]
    jobs = AttributionJobs(AttributionSettings("m", "t"))
    with TestClient(
        create_app(tmp_path, attribution=jobs, read_only=True), base_url="http://127.0.0.1"
    ) as client:
        assert client.post("/api/attribution/jobs", json={"prompt": "The capital"}).status_code == 403
