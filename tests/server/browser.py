"""Shared by the browser tests and ``benchmarks/ui.py``: a live server, headless Chromium, and a
generated graph at the scale the UI must handle (10k nodes, 100k links).

Chromium is Debian's (``apt-get install chromium``), driven by the ``playwright`` Python package
with ``executable_path``; ``playwright install`` (which downloads browsers) is never needed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch
import uvicorn

from tests.graph.factory import random_graph
from tracewire.graph import Graph, keep_all, write_graph_files

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's chromium, if installed (``TRACEWIRE_CHROMIUM`` overrides)."""
    for candidate in (os.environ.get("TRACEWIRE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


class LiveServer:
    """uvicorn on a free loopback port in a daemon thread; ``with LiveServer(app) as url: ...``."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def group_pinned(page: Any, node_ids: list[str], name: str) -> None:
    """Check pinned ``node_ids`` in the subgraph list and group them into supernode ``name`` with "g"."""
    for node_id in node_ids:
        page.check(f'#subgraph-items li[data-key="{node_id}"] input[type="checkbox"]')
    page.fill("#group-name", name)
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("g")
    page.wait_for_selector("#subgraph-items li.supernode")
    assert page.locator("#subgraph-items li.supernode input[type='text']").input_value() == name


def scale_graph() -> Graph:
    """~10k nodes (9750 features, 12 layers x 16 positions) and ~105k links."""
    graph = random_graph(n_layers=12, n_pos=16, n_features=9750, n_targets=10, edge_density=0.004, seed=0)
    return dataclasses.replace(graph, target_token_ids=torch.arange(100, 110))


def write_scale_graph(directory: Path, slug: str = "big") -> Path:
    """The scale graph as a Neuronpedia JSON with every node and link kept."""
    graph = scale_graph()
    return write_graph_files(graph, slug, directory, prune=keep_all(graph))
