"""Fixtures of the server tests: a demo graph directory, a fake feature store, a tiny steerer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.interventions.setups import setup as tiny_setup
from tests.server.browser import chromium_path, launch_chromium
from tests.server.fakes import FakeFeatureStore, write_demo_directory
from tracewire.interventions.api import Intervener
from tracewire.server import FeatureService, Steerer, create_app


@pytest.fixture
def graph_dir(tmp_path: Path) -> Path:
    root = tmp_path / "graphs"
    write_demo_directory(root)
    return root


@pytest.fixture
def store() -> FakeFeatureStore:
    return FakeFeatureStore()


@pytest.fixture(scope="session")
def steerer() -> Steerer:
    model, transcoders = tiny_setup("llama")
    return Steerer(Intervener(model, transcoders))


@pytest.fixture
def client(graph_dir: Path, store: FakeFeatureStore, steerer: Steerer) -> TestClient:
    app = create_app(
        graph_dir, features=FeatureService(lambda: store), steerer=steerer, max_body_bytes=64_000
    )
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the browser tests (skipped, with the reason, when it is missing)."""
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
