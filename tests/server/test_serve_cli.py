"""``tracewire serve``: argument errors, and a real server process answering on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.server.fakes import write_demo_directory
from tracewire.cli.main import app
from tracewire.server import FeatureService, create_app, open_feature_store

runner = CliRunner()


def _text(output: str) -> str:
    """The message without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_serve_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a directory" in _text(result.output)


def test_serve_transcoders_need_a_model_and_other_models_need_transcoders(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--transcoders", "smollm2-135m"])
    assert result.exit_code == 2 and "--transcoders needs --model" in _text(result.output)
    result = runner.invoke(app, ["serve", str(tmp_path), "--model", "google/gemma-2-2b"])
    assert result.exit_code == 2 and "--transcoders is needed for --model 'google/gemma-2-2b'" in _text(
        result.output
    )


def test_serve_with_the_embedded_model_uses_the_shipped_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve DIR --model smollm2-135m`` steers and attributes with the shipped set (no --transcoders)."""
    import uvicorn

    from tracewire.cli import serve as serve_cli
    from tracewire.server import attribution_jobs

    seen: dict[str, object] = {}
    monkeypatch.setattr(serve_cli, "_steerer", lambda model, transcoders, dtype, device: seen.update(
        steer=(model, transcoders)))  # fmt: skip
    monkeypatch.setattr(attribution_jobs, "AttributionJobs", lambda settings: seen.update(
        attribute=(settings.model, settings.transcoders)))  # fmt: skip
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: seen.update(served=True))
    result = runner.invoke(app, ["serve", str(tmp_path), "--model", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert seen == {
        "steer": ("smollm2-135m", "smollm2-135m"),
        "attribute": ("smollm2-135m", "smollm2-135m"),
        "served": True,
    }


def test_serve_refuses_a_missing_feature_store(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--features", str(tmp_path / "features.sqlite")])
    assert result.exit_code == 2 and "does not exist" in _text(result.output)


def test_a_feature_store_that_cannot_be_read_is_a_503(graph_dir: Path, tmp_path: Path) -> None:
    """Through the real opener (tracewire.dashboards.FeatureStore, or its absence)."""
    from fastapi.testclient import TestClient

    bogus = tmp_path / "features.sqlite"
    bogus.write_text("not a database")
    service = FeatureService(open_feature_store(str(bogus), readonly=True), writable=False)
    with TestClient(create_app(graph_dir, features=service), base_url="http://127.0.0.1") as client:
        response = client.get("/api/features/0/1")
        assert response.status_code == 503, response.text
        assert client.get("/api/info").json()["labels_writable"] is False
        assert client.put("/api/features/0/1/label", json={"label": "x"}).status_code == 403


def test_serve_runs_a_server_on_loopback(tmp_path: Path) -> None:
    root = tmp_path / "graphs"
    write_demo_directory(root)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tracewire.cli.main", "serve", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        listing = _get_when_up(f"http://127.0.0.1:{port}/api/graphs", process)
        assert {g["slug"] for g in listing["graphs"]} == {"demo", "small", "packed", "broken"}
        with pytest.raises(urllib.error.HTTPError) as refused:  # not for another host name
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/graphs", headers={"Host": "evil.example"}
                )
            )
        assert refused.value.code == 421
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output


def _get_when_up(url: str, process: subprocess.Popen[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tracewire serve exited: {process.communicate()[0]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError("tracewire serve did not answer in time")
