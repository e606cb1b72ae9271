"""Where training activations come from: one model forward gives every layer's (input, target) pair.

:class:`ModelActivations` captures the input and output sites of every layer
(``tracewire.models.hooks.capture_sites``) while running the model on corpus windows; the forward
stops as soon as the last needed activation is captured, so neither the final norm nor the
unembedding run.
BOS positions are dropped: the BOS is an attention sink with huge activations that would dominate
the statistics, and attribution never explains it.

Data positions are a pure function of the step: step ``s`` reads corpus windows
``s·B .. s·B + B − 1`` (wrapping around for multi-epoch runs), split evenly across DDP ranks. That
makes resuming exact and lets every rank know its share without communication. The last
``eval_windows`` windows of the corpus are held out for evaluation.

:class:`CachedActivations` wraps any source and keeps each step's tensors on disk (safetensors),
so a second epoch over the same windows skips the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from tracewire.atomic import atomic_write_with
from tracewire.corpus import TokenCorpus
from tracewire.errors import InvalidArgumentError
from tracewire.models.hooks import capture_sites
from tracewire.models.loading import LoadedModel

log = logging.getLogger(__name__)


class ActivationSource(Protocol):
    """What the trainer reads: deterministic batches ``(inputs, targets)``, each ``[n_layers, N, d]``."""

    n_layers: int
    d_model: int

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]: ...

    def eval_batch(self) -> tuple[Tensor, Tensor]: ...


def layer_activations(
    loaded: LoadedModel, ids: Tensor, input_site: str, output_site: str, *, autocast: bool = False
) -> tuple[Tensor, Tensor]:
    """Inputs and targets ``[n_layers, batch * (seq - 1), d]`` (fp32, BOS dropped) for token ids ``ids``."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        values = capture_sites(loaded, ids, input_site, output_site)
    d = loaded.d_model
    layers = range(loaded.n_layers)
    xs = torch.stack([values.inputs[layer][:, 1:].reshape(-1, d) for layer in layers]).float()
    ys = torch.stack([values.outputs[layer][:, 1:].reshape(-1, d) for layer in layers]).float()
    return xs, ys


class ModelActivations:
    """Activations of ``loaded`` on windows of ``corpus``, ``batch_windows`` windows per step."""

    def __init__(
        self,
        loaded: LoadedModel,
        corpus: TokenCorpus,
        *,
        input_site: str = "mlp_in",
        output_site: str = "mlp_out",
        seq_len: int = 128,
        batch_windows: int = 32,
        eval_windows: int = 32,
        autocast: bool = False,
    ) -> None:
        self.loaded, self.corpus = loaded, corpus
        self.input_site, self.output_site = input_site, output_site
        self.seq_len, self.batch_windows, self.eval_windows = seq_len, batch_windows, eval_windows
        self.autocast = autocast
        self.n_layers, self.d_model = loaded.n_layers, loaded.d_model
        total = corpus.n_windows(seq_len)
        self.n_train_windows = total - eval_windows
        if self.n_train_windows < batch_windows:
            raise InvalidArgumentError(
                f"corpus {corpus.directory} has {total} windows of {seq_len} tokens: too few for "
                f"{eval_windows} held-out + a batch of {batch_windows}"
            )
        if corpus.bos_token_id != loaded.bos_token_id:
            log.warning(
                "corpus BOS %s differs from the model's BOS %s", corpus.bos_token_id, loaded.bos_token_id
            )

    def window_indices(self, step: int, rank: int = 0, world: int = 1) -> list[int]:
        """Corpus windows of ``step`` that ``rank`` of ``world`` reads."""
        if self.batch_windows % world:
            raise InvalidArgumentError(
                f"batch_windows={self.batch_windows} is not divisible by the {world} DDP ranks"
            )
        share = self.batch_windows // world
        first = step * self.batch_windows + rank * share
        return [(first + j) % self.n_train_windows for j in range(share)]

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]:
        ids = self.corpus.batch(self.window_indices(step, rank, world), self.seq_len)
        return layer_activations(self.loaded, ids, self.input_site, self.output_site, autocast=self.autocast)

    def eval_batch(self) -> tuple[Tensor, Tensor]:
        first = self.n_train_windows
        ids = self.corpus.batch(range(first, first + self.eval_windows), self.seq_len)
        return layer_activations(self.loaded, ids, self.input_site, self.output_site, autocast=self.autocast)


class CachedActivations:
    """Disk cache in front of a source: step ``s`` and step ``s + period`` read the same windows.

    ``period`` is the number of distinct steps (windows per epoch / batch); files are
    ``{cache_dir}/step-{s % period}-rank-{rank}-of-{world}.safetensors``, written atomically.
    """

    def __init__(self, source: ActivationSource, cache_dir: str | os.PathLike[str], period: int) -> None:
        self.source, self.dir, self.period = source, Path(cache_dir), max(1, period)
        self.n_layers, self.d_model = source.n_layers, source.d_model
        self.dir.mkdir(parents=True, exist_ok=True)

    def _cached(self, name: str, compute: object) -> tuple[Tensor, Tensor]:
        path = self.dir / name
        if path.exists():
            data = load_file(str(path))
            return data["inputs"], data["targets"]
        assert callable(compute)
        x, y = compute()
        tensors = {"inputs": x.contiguous(), "targets": y.contiguous()}
        atomic_write_with(path, lambda temp: save_file(tensors, temp))
        return x, y

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]:
        key = step % self.period
        return self._cached(f"step-{key}-rank-{rank}-of-{world}.safetensors",
                            lambda: self.source.batch(key, rank, world))  # fmt: skip

    def eval_batch(self) -> tuple[Tensor, Tensor]:
        return self._cached("eval.safetensors", self.source.eval_batch)
