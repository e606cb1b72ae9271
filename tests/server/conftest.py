"""Fixtures of the server tests: a demo graph directory, a fake feature store, a tiny steerer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.interventions.setups import setup as tiny_setup
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
