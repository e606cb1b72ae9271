"""Shared fixtures: one tiny corpus, the token-feature model and one finished store per session.

One intra-op thread for the tiny tensors of these tests (as in tests/corpus): on a shared 2-core box,
OpenMP threads spin-waiting for a busy core make tiny ops many times slower than a single thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.corpus.fixtures import build_fixture_corpus
from tests.dashboards.token_features import token_model, token_transcoders
from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)
from tracewire.corpus import TokenCorpus
from tracewire.dashboards import DashboardConfig, build_feature_store

CONFIG = DashboardConfig(
    seq_len=32, n_top=5, n_quantiles=4, per_quantile=3, context_before=6, context_after=3, n_fine_bins=1024
)
TOKENS = 2400
BATCH_WINDOWS = 8


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> TokenCorpus:
    return build_fixture_corpus(tmp_path_factory.mktemp("dash-corpus"))


@pytest.fixture(scope="session")
def token_setup():
    loaded = token_model()
    return loaded, token_transcoders(loaded)


def build(token_setup, corpus: TokenCorpus, path: Path, **kwargs):
    loaded, transcoders = token_setup
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("batch_windows", BATCH_WINDOWS)
    kwargs.setdefault("progress", False)
    return build_feature_store(loaded, transcoders, corpus, path, tokens=TOKENS, **kwargs)


@pytest.fixture(scope="session")
def built_store(token_setup, corpus: TokenCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of every feature of both layers (built once; tests open it read-only or copy it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path_factory.mktemp("dash-store") / "features.sqlite"
        build(token_setup, corpus, path)
    finally:
        torch.set_num_threads(before)
    return path
