"""``build_feature_store``: one pass over a corpus sample gives the dashboards of many features.

The pass reads corpus windows in a fixed order, ``batch_windows`` at a time. Per batch: one model
forward, truncated after the deepest selected layer, gives every selected layer's transcoder
input (``capture.layer_inputs``); each layer's :class:`~tracewire.dashboards.layer_job.LayerJob`
encodes all its selected features in one matmul and updates their statistics with tensor ops.
After the last batch, cards are made per layer, in chunks, and streamed into the store (one
transaction per chunk), so readers see finished features while the rest are written.

Resuming and splitting:

- features that already have a card in the store are skipped, so re-running a build (or running
  the whole selection after a partial one) only computes what is missing;
- the accumulators are checkpointed (``checkpoint.py``) every ``checkpoint_seconds`` (or every
  ``checkpoint_every`` batches); a re-run of an interrupted build loads the checkpoint and
  continues from the next batch, giving the same store as an uninterrupted build;
- jobs over disjoint layer / feature ranges (``FeatureSelection.restrict``) may run at the same
  time, into one store (SQLite serialises their short write transactions) or into separate ones.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from tracewire.dashboards.capture import layer_inputs
from tracewire.dashboards.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from tracewire.dashboards.config import DashboardConfig
from tracewire.dashboards.finalize import layer_records
from tracewire.dashboards.layer_job import LayerJob
from tracewire.dashboards.logits import decoder_logits, readout_matrix
from tracewire.dashboards.selection import FeatureSelection
from tracewire.dashboards.store import FeatureStore, FeatureStoreError
from tracewire.errors import InvalidArgumentError
from tracewire.models.loading import LoadedModel
from tracewire.threads import refresh_threads, use_thread_policy
from tracewire.transcoders.base import TranscoderSet

log = logging.getLogger(__name__)


class WindowSource(Protocol):
    """What a build reads: fixed-order token windows that start with BOS (``TokenCorpus`` is one)."""

    def n_windows(self, seq_len: int) -> int: ...

    def batch(self, indices: Sequence[int], seq_len: int) -> Tensor: ...


@dataclass
class BuildReport:
    """What a build did, with its throughput."""

    store: Path
    features_written: int = 0
    features_skipped: int = 0
    windows: int = 0
    tokens: int = 0
    resumed_from_window: int = 0
    pass_seconds: float = 0.0
    finalize_seconds: float = 0.0
    firing_events: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Corpus tokens (BOS excluded) per second of the activation pass (this run's share)."""
        done = self.info.get("tokens_this_run", self.tokens)
        return done / self.pass_seconds if self.pass_seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.features_written} cards written ({self.features_skipped} already there) to {self.store}; "
            f"{self.tokens:,} tokens in {self.windows} windows; pass {self.pass_seconds:.1f}s "
            f"({self.tokens_per_second:,.0f} tok/s), cards {self.finalize_seconds:.1f}s"
        )


def vocab_strings(loaded: LoadedModel) -> list[str]:
    """Every token id decoded on its own (what cards print), for the unembedding's vocabulary."""
    size = loaded.vocab_size
    if loaded.tokenizer is None:
        return [f"<{i}>" for i in range(size)]
    return [str(s) for s in loaded.tokenizer.batch_decode([[i] for i in range(size)])]


@use_thread_policy("dashboards")
def build_feature_store(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    corpus: WindowSource,
    output: str | Path,
    *,
    tokens: int,
    selection: FeatureSelection | None = None,
    config: DashboardConfig | None = None,
    batch_windows: int = 16,
    names: dict[str, Any] | None = None,
    checkpoint_seconds: float = 600.0,
    checkpoint_every: int | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> BuildReport:
    """Build (or resume, or extend) the feature store at ``output``.

    ``tokens``: corpus tokens to read (rounded up to whole windows of ``config.seq_len``; BOS
    positions are not counted). ``selection``: features to build (default: all features of every
    layer). ``names``: how the model, transcoders and corpus are named in the store's ``build``
    record (CLI specs); defaults come from the objects. ``on_batch(i)`` is called after batch
    ``i`` (tests use it to interrupt a build).
    """
    config = config or DashboardConfig()
    if tokens < 1:
        raise InvalidArgumentError(f"tokens must be >= 1, got {tokens}")
    if batch_windows < 1:
        raise InvalidArgumentError(f"batch_windows must be >= 1, got {batch_windows}")
    if transcoders.n_layers != loaded.n_layers or transcoders.d_model != loaded.d_model:
        raise FeatureStoreError(
            f"transcoders ({transcoders.n_layers} layers, d_model {transcoders.d_model}) do not fit the "
            f"model {loaded.name!r} ({loaded.n_layers} layers, d_model {loaded.d_model})"
        )
    d_tc = transcoders.d_transcoder
    selection = selection or FeatureSelection.all(transcoders.n_layers)
    selection.validate(transcoders.n_layers, d_tc)
    seq = config.seq_len
    available = corpus.n_windows(seq)
    n_windows = min(math.ceil(tokens / (seq - 1)), available)
    if n_windows < 1:
        raise FeatureStoreError(f"the corpus has no whole window of {seq} tokens")
    if n_windows * (seq - 1) < tokens:
        log.warning("the corpus holds only %d windows of %d tokens; using all of them", available, seq)
    n_tokens = n_windows * (seq - 1)
    build = _build_record(loaded, transcoders, corpus, config, n_windows, n_tokens, names or {})
    output = Path(output).expanduser()
    report = BuildReport(store=output, windows=n_windows, tokens=n_tokens)
    store = FeatureStore(output)
    try:
        store.check_build(build)
        store.write_meta({"n_tokens": n_tokens, "vocab_size": loaded.vocab_size})
        vocab = vocab_strings(loaded)
        if not store.has_vocab():
            store.write_vocab(vocab)
        ckpt_path = checkpoint_path(output, selection.key(d_tc))
        checkpoint = load_checkpoint(ckpt_path, build) if ckpt_path.exists() else None
        if checkpoint is not None:
            todo = FeatureSelection(
                {
                    int(k.split(".")[0][5:]): v
                    for k, v in checkpoint.tensors.items()
                    if k.endswith(".feature_ids")
                }
            )
        else:
            done = {layer: torch.from_numpy(store.existing(layer)) for layer in selection.layers}
            todo = selection.without(done, d_tc)
        report.features_skipped = selection.count(d_tc) - todo.count(d_tc)
        if not todo.layers:
            log.info("every selected feature already has a card in %s", output)
            return report
        log.info("dashboards for %s over %d tokens", todo.describe(d_tc), n_tokens)
        jobs = {
            layer: LayerJob(transcoders, layer, todo.ids(layer, d_tc), config)
            for layer in sorted(todo.layers)
        }
        start_window = 0
        if checkpoint is not None:
            for job in jobs.values():
                job.load_state_dict(checkpoint.tensors)
            start_window = checkpoint.windows_done
            log.info("resuming from %s at window %d of %d", ckpt_path, start_window, n_windows)
        report.resumed_from_window = start_window
        saved = _run_pass(
            loaded,
            transcoders,
            corpus,
            jobs,
            build,
            report,
            ckpt_path,
            start_window,
            batch_windows,
            checkpoint_seconds,
            checkpoint_every,
            progress,
            on_batch,
        )
        if saved:  # a long pass: keep its result safe while the cards are written
            save_checkpoint(ckpt_path, build, n_windows, _state(jobs))
        t0 = time.perf_counter()
        report.features_written = _write_cards(
            loaded, transcoders, corpus, jobs, config, n_tokens, vocab, store, progress
        )
        report.finalize_seconds = time.perf_counter() - t0
        ckpt_path.unlink(missing_ok=True)
    finally:
        store.close()
    log.info(report.summary())
    return report


def _build_record(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    corpus: WindowSource,
    config: DashboardConfig,
    n_windows: int,
    n_tokens: int,
    names: dict[str, Any],
) -> dict[str, Any]:
    """Everything that makes two builds' cards comparable (stored as meta ``build``)."""
    cfg = transcoders.config
    directory = getattr(corpus, "directory", None)
    return {
        "model": names.get("model", loaded.name),
        "transcoders": names.get("transcoders", cfg.scan or "unnamed"),
        "scan": cfg.scan or names.get("transcoders", "unnamed"),
        "kind": cfg.kind,
        "activation": cfg.activation,
        "n_layers": cfg.n_layers,
        "d_transcoder": cfg.d_transcoder,
        "input_site": cfg.input_site,
        "corpus": names.get("corpus", str(directory) if directory is not None else type(corpus).__name__),
        "windows": n_windows,
        "tokens": n_tokens,
        "dtype": str(transcoders.dtype).replace("torch.", ""),
        **config.to_dict(),
    }


def _state(jobs: dict[int, LayerJob]) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for job in jobs.values():
        state.update(job.state_dict())
    return state


def _run_pass(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    corpus: WindowSource,
    jobs: dict[int, LayerJob],
    build: dict[str, Any],
    report: BuildReport,
    ckpt_path: Path,
    start_window: int,
    batch_windows: int,
    checkpoint_seconds: float,
    checkpoint_every: int | None,
    progress: bool,
    on_batch: Callable[[int], None] | None,
) -> bool:
    """The activation pass over windows ``start_window ..``; True if it saved a checkpoint."""
    seq, n_windows = int(build["seq_len"]), int(build["windows"])
    site, layers = transcoders.config.input_site, sorted(jobs)
    dtype = transcoders.dtype
    bar = tqdm(
        total=(n_windows - start_window) * (seq - 1),
        desc="dashboards",
        unit="tok",
        unit_scale=True,
        disable=not progress,
        dynamic_ncols=True,
    )
    saved = False
    last_save = t0 = time.perf_counter()
    try:
        for batch_index, first in enumerate(range(start_window, n_windows, batch_windows)):
            refresh_threads()
            stop = min(first + batch_windows, n_windows)
            ids = corpus.batch(range(first, stop), seq)
            inputs = layer_inputs(loaded, ids, site, layers)
            for layer, job in jobs.items():
                x = inputs[layer].to(device=transcoders.device, dtype=dtype)
                report.firing_events += job.process(x, first * seq)
            bar.update((stop - first) * (seq - 1))
            if on_batch is not None:
                on_batch(batch_index)
            now = time.perf_counter()
            due = (checkpoint_every is not None and (batch_index + 1) % checkpoint_every == 0) or (
                checkpoint_every is None and now - last_save >= checkpoint_seconds
            )
            if due and stop < n_windows:
                save_checkpoint(ckpt_path, build, stop, _state(jobs))
                saved, last_save = True, time.perf_counter()
    finally:
        bar.close()
        report.pass_seconds = time.perf_counter() - t0
        report.info["tokens_this_run"] = (n_windows - start_window) * (seq - 1)
    return saved


def _write_cards(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    corpus: WindowSource,
    jobs: dict[int, LayerJob],
    config: DashboardConfig,
    n_tokens: int,
    vocab: Sequence[str],
    store: FeatureStore,
    progress: bool,
) -> int:
    """Make every job's cards and stream them into the store, one transaction per chunk."""
    readout = readout_matrix(loaded)
    seq = config.seq_len

    def fetch(windows: np.ndarray) -> np.ndarray:
        return corpus.batch([int(w) for w in windows], seq).numpy()

    written = 0
    total = sum(job.n for job in jobs.values())
    with tqdm(total=total, desc="cards", unit="feat", disable=not progress, dynamic_ncols=True) as bar:
        for layer, job in jobs.items():
            logits = decoder_logits(transcoders, layer, job.feature_ids, readout, config.n_logits)
            for records in layer_records(job, config, n_tokens, logits, fetch, vocab):
                written += store.put_features(records)
                bar.update(len(records))
    return written
