"""Shared by the training tests and their subprocess workers: tiny model + fixture corpus + a short config."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.fixtures import build_fixture_corpus
from tests.factories.models import tiny_model
from tracewire.corpus import TokenCorpus
from tracewire.training import ModelActivations, TrainConfig


def tiny_corpus(tmp: Path) -> TokenCorpus:
    if (tmp / "corpus" / "manifest.json").exists():
        return TokenCorpus(tmp / "corpus")
    return build_fixture_corpus(tmp, n_files=40, words=120)


def tiny_config(**changes: object) -> TrainConfig:
    base = TrainConfig(kind="plt", activation="relu", features=32, tokens=8 * 15 * 40, seq_len=16,
                       batch_windows=8,
                       lr=2e-2, sparsity_coef=1e-3, checkpoint_every=4, log_every=1, stats_batches=2,
                       eval_windows=8)  # fmt: skip
    return base.replace(**changes)


def tiny_source(corpus: TokenCorpus, config: TrainConfig, arch: str = "llama") -> ModelActivations:
    loaded = tiny_model(arch, n_layers=3, d_model=16)
    return ModelActivations(loaded, corpus, input_site=config.input_site, output_site=config.output_site,
                            seq_len=config.seq_len, batch_windows=config.batch_windows,
                            eval_windows=config.eval_windows)  # fmt: skip
