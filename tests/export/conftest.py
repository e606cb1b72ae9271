"""Fixtures of the export tests: a graph that ``attribute()`` made and a real feature store for it.

The token-feature model (tests/dashboards/token_features.py) has features that fire on one known
token with one known top logit, so a card shown in the browser can be checked against the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.corpus.fixtures import build_fixture_corpus
from tests.dashboards.token_features import token_model, token_transcoders
from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)
from tracewire.attribution.engine import attribute
from tracewire.dashboards import DashboardConfig, build_feature_store

PROMPT = "The capital of Texas is"
CONFIG = DashboardConfig(
    seq_len=32, n_top=5, n_quantiles=4, per_quantile=3, context_before=6, context_after=3, n_fine_bins=256
)


@pytest.fixture(scope="session")
def attributed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{graph: .safetensors from attribute(), store: features.sqlite of that model} (built once)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("export")
        loaded = token_model()
        transcoders = token_transcoders(loaded)
        graph = attribute(PROMPT, loaded, transcoders, progress=False)
        graph_path = graph.save(root / "texas.safetensors")
        corpus = build_fixture_corpus(root / "corpus")
        store = root / "features.sqlite"
        build_feature_store(
            loaded, transcoders, corpus, store, tokens=1200, config=CONFIG, batch_windows=8, progress=False
        )
    finally:
        torch.set_num_threads(before)
    return {"graph": graph_path, "store": store}
