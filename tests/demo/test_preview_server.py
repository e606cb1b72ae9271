"""The demo's preview server: the first graph is served (read-only) while the demo goes on, and the
port is free again for the full server when the preview stops."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from tests.server.fakes import write_demo_directory
from tracewire.cli.demo import _PreviewServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, deadline: float) -> bytes:
    while True:  # wait for the server to answer, not for a fixed time
        try:
            return urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_preview_serves_the_first_graph_read_only_and_frees_the_port(tmp_path: Path):
    write_demo_directory(tmp_path / "graphs")
    port = _free_port()
    preview = _PreviewServer(port)
    preview.start(tmp_path / "graphs")
    try:
        base = f"http://127.0.0.1:{port}"
        listing = json.loads(_get(f"{base}/api/graphs", time.monotonic() + 120))
        slugs = {entry["slug"] for entry in listing["graphs"]}
        assert {"demo", "small"} <= slugs
        assert json.loads(_get(f"{base}/api/info", time.monotonic() + 60))["read_only"] is True
        assert b"<html" in _get(f"{base}/", time.monotonic() + 60).lower()
    finally:
        preview.stop()
    assert preview.thread is not None and not preview.thread.is_alive()
    with socket.socket() as s:  # the full server can bind the port now
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
