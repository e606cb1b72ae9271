"""One attribution worker: loads the model and transcoders once, then attributes prompt after prompt.

The same class runs in the driver process (a serial batch) and as a Ray actor (``ray.remote`` of
it, see ``runner.py``), so a graph made by a worker is made by exactly the code a serial run uses —
which is why batch graphs are bit-identical to serial ones at equal thread counts.

A prompt that fails (a target that is not one token, a prompt too long) is returned as a failed
result with the error's message; the worker keeps its model and goes on with the next prompt.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tracewire.batch.prompts import PromptJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionSettings:
    """What every prompt of a batch shares; recorded in the manifest so a resumed batch cannot mix them.

    ``threads``: intra-op threads of each worker (``torch.set_num_threads``), so that N workers on
    one machine use N × threads cores instead of each grabbing all of them. ``device``: ``"auto"``
    is CUDA when the worker sees a GPU (Ray gives each worker its own), else CPU.
    """

    model: str
    transcoders: str
    dtype: str = "float32"
    device: str = "auto"
    threads: int = 1
    max_feature_nodes: int | None = None
    batch_size: int = 64
    max_n_logits: int = 10
    desired_logit_prob: float = 0.95

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that change a graph (threads and device do not change its meaning)."""
        record = self.to_json()
        record.pop("threads")
        record.pop("device")
        return record


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` → ``torch.float32`` (settings hold the name, so they stay JSON)."""
    from tracewire.errors import InvalidArgumentError

    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise InvalidArgumentError(f"dtype {name!r}: expected a torch floating dtype name such as 'float32'")
    return value


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible to this process, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class AttributionWorker:
    """Holds one loaded model and transcoder set for many jobs.

    :meth:`run` attributes one prompt and saves its graph; :meth:`build_dashboard_shard` builds the
    dashboards of one feature shard into its own store (``batch/dashboards.py`` merges them).
    """

    def __init__(self, settings: AttributionSettings) -> None:
        from tracewire.models.loading import load_model
        from tracewire.transcoders.io import load_transcoders

        if settings.threads >= 1:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.device = resolve_device(settings.device)
        dtype = torch_dtype(settings.dtype)
        started = time.perf_counter()
        self.model = load_model(settings.model, dtype=dtype, device=self.device)
        self.transcoders = load_transcoders(
            settings.transcoders,
            n_layers=self.model.n_layers,
            d_model=self.model.d_model,
            device=self.device,
            dtype=dtype,
        )
        self.load_seconds = time.perf_counter() - started

    def describe(self) -> dict[str, Any]:
        """Process id, device, threads and load time (the benchmark and the kill test use the pid)."""
        return {
            "pid": os.getpid(),
            "device": self.device,
            "threads": torch.get_num_threads(),
            "load_seconds": self.load_seconds,
            "peak_rss_mib": peak_rss_mib(),
        }

    def run(self, job: PromptJob, graph_path: str) -> dict[str, Any]:
        """Attribute ``job``, save the graph atomically at ``graph_path``; a result dict either way."""
        from tracewire.attribution.engine import attribute
        from tracewire.errors import TracewireError
        from tracewire.graph.scores import graph_scores

        started = time.perf_counter()
        base = {"slug": job.slug, "prompt": job.prompt, "pid": os.getpid()}
        try:
            graph = attribute(
                job.prompt,
                self.model,
                self.transcoders,
                targets=job.targets,
                max_n_logits=self.settings.max_n_logits,
                desired_logit_prob=self.settings.desired_logit_prob,
                max_feature_nodes=job.budget if job.budget is not None else self.settings.max_feature_nodes,
                batch_size=self.settings.batch_size,
                progress=False,
            )
            graph.save(graph_path)
        except Exception as exc:  # a failure (bad target, out of memory, a bug) ends only this prompt
            log.warning("prompt %s failed: %s", job.slug, exc, exc_info=not isinstance(exc, TracewireError))
            return {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        scores = graph_scores(graph)
        return {
            **base,
            "status": "ok",
            "graph": Path(graph_path).name,
            **graph_summary(graph),
            "replacement": scores.replacement,
            "completeness": scores.completeness,
            "seconds": time.perf_counter() - started,
            "peak_rss_mib": peak_rss_mib(),
        }

    def build_dashboard_shard(self, shard: DashboardShard) -> dict[str, Any]:
        """Build the cards of ``shard``'s features into ``shard.output`` (resumable, like any build)."""
        from tracewire.corpus import TokenCorpus
        from tracewire.dashboards.build import build_feature_store
        from tracewire.dashboards.config import DashboardConfig
        from tracewire.dashboards.selection import FeatureSelection

        d_tc = self.transcoders.d_transcoder
        selection = FeatureSelection.all(self.transcoders.n_layers).restrict(
            range(*shard.layers), range(*shard.features), d_transcoder=d_tc
        )
        report = build_feature_store(
            self.model,
            self.transcoders,
            TokenCorpus(shard.corpus),
            shard.output,
            tokens=shard.tokens,
            selection=selection,
            config=DashboardConfig(**shard.config),
            batch_windows=shard.batch_windows,
            names={
                "model": self.settings.model,
                "transcoders": self.settings.transcoders,
                "corpus": shard.corpus,
            },
            progress=False,
        )
        return {
            "shard": shard.index,
            "status": "ok",
            "store": shard.output,
            "features_written": report.features_written,
            "pass_seconds": report.pass_seconds,
            "pid": os.getpid(),
        }


@dataclass(frozen=True)
class DashboardShard:
    """One worker's share of a dashboard build: layers ``[a, b)`` x feature ids ``[c, d)``, its own store."""

    index: int
    layers: tuple[int, int]
    features: tuple[int, int]
    corpus: str
    output: str
    tokens: int
    config: dict[str, Any]
    batch_windows: int = 16


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (what one worker needs; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def graph_summary(graph: Any) -> dict[str, Any]:
    """The index fields of one graph: tokens, targets with probabilities, sizes."""
    return {
        "n_tokens": graph.n_pos,
        "targets": list(graph.target_labels),
        "target_probabilities": [float(p) for p in graph.target_probabilities.tolist()],
        "n_features": graph.n_features,
        "n_edges": graph.n_edges,
    }
