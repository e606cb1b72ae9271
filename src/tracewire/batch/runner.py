"""``run_batch``: attribute many prompts, in this process or on Ray workers, resumably.

The output folder::

    DIR/graphs/{slug}.safetensors   one graph per prompt, each written atomically (Graph.save)
    DIR/manifest.json               settings + every prompt's status ("ok" / "failed" + error),
                                    rewritten atomically every few seconds and at the end
    DIR/index.json                  the finished graphs: prompt, file, targets, probabilities,
                                    replacement / completeness scores, sizes

Resuming: a prompt whose graph file exists is skipped (an atomic write means an existing file is
a whole graph); failed and unfinished prompts are tried again. A folder made with other settings
(model, transcoders, budget, ...) is refused, so one index never mixes graphs of two setups.

Workers: ``workers=0`` and no ``ray_address`` runs everything here, in one process. Otherwise each
of ``workers`` Ray actors loads the model once and is fed one prompt at a time; a prompt that
fails, or whose worker dies, is recorded and the batch goes on with the workers left. One
progress bar counts prompts over all workers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tracewire.atomic import atomic_write_json
from tracewire.batch.prompts import PromptJob
from tracewire.batch.worker import AttributionSettings, AttributionWorker, graph_summary
from tracewire.errors import CheckpointError, GraphFormatError, InvalidArgumentError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX = "index.json"
GRAPHS = "graphs"
FORMAT = "tracewire-batch"
#: The manifest is rewritten at most this often during a batch (and always at its end).
SAVE_SECONDS = 5.0

ResultCallback = Callable[[dict[str, Any]], None]


@dataclass
class BatchReport:
    """What one call of :func:`run_batch` did."""

    directory: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (
            f"{len(self.done)} graphs written, {len(self.skipped)} already there, "
            f"{len(self.failed)} failed in {self.seconds:.1f}s -> {self.directory / INDEX}"
        )
        if self.pending:
            text += f"; {len(self.pending)} not run (no worker left): run the same command again"
        return text


def graph_path(directory: Path, slug: str) -> Path:
    return directory / GRAPHS / f"{slug}.safetensors"


def run_batch(
    jobs: Sequence[PromptJob],
    settings: AttributionSettings,
    directory: str | Path,
    *,
    workers: int = 0,
    ray_address: str | None = None,
    progress: bool = True,
    on_result: ResultCallback | None = None,
) -> BatchReport:
    """Attribute ``jobs`` into ``directory`` (layout in the module docstring); resumable."""
    if workers < 0:
        raise InvalidArgumentError(f"workers must be >= 0, got {workers}")
    out = Path(directory).expanduser()
    started = time.perf_counter()
    manifest = _Manifest.open(out, settings)
    for leftover in (out / GRAPHS).glob(".*.tmp"):  # a write killed before its rename; never a graph
        leftover.unlink(missing_ok=True)
    report = BatchReport(directory=out)
    todo = []
    for job in jobs:
        if graph_path(out, job.slug).is_file():
            report.skipped.append(job.slug)
            manifest.ensure_entry(job, graph_path(out, job.slug))
        else:
            todo.append(job)
    manifest.save()
    bar = tqdm(
        total=len(jobs), initial=len(jobs) - len(todo), desc="prompts", unit="prompt", disable=not progress
    )

    def record(result: dict[str, Any]) -> None:
        manifest.record(result)
        if result["status"] == "ok":
            report.done.append(result["slug"])
        else:
            report.failed[result["slug"]] = result["error"]
        bar.update(1)
        if on_result is not None:
            on_result(result)

    try:
        if todo and workers == 0 and ray_address is None:
            worker = AttributionWorker(settings)
            report.workers.append(worker.describe())
            for job in todo:
                record(worker.run(job, str(graph_path(out, job.slug))))
        elif todo:
            from tracewire.batch.ray_cluster import run_on_actors

            def call(actor: Any, job: PromptJob) -> Any:
                return actor.run.remote(job, str(graph_path(out, job.slug)))

            def failure(job: PromptJob, error: str) -> dict[str, Any]:
                return {"slug": job.slug, "prompt": job.prompt, "status": "failed", "error": error}

            pending = run_on_actors(
                settings, todo, call, record, failure, workers=max(workers, 1), address=ray_address,
                describe=report.workers.extend,
            )  # fmt: skip
            report.pending = [job.slug for job in pending]
    finally:
        bar.close()
        manifest.save()
        write_index(out, jobs, manifest.entries)
    report.seconds = time.perf_counter() - started
    return report


class _Manifest:
    """``manifest.json``: the batch's settings and each prompt's last status."""

    def __init__(self, directory: Path, settings: AttributionSettings, entries: dict[str, dict[str, Any]]):
        self.path = directory / MANIFEST
        self.settings = settings
        self.entries = entries
        self.saved_at = time.monotonic()

    @classmethod
    def open(cls, directory: Path, settings: AttributionSettings) -> _Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            (directory / GRAPHS).mkdir(parents=True, exist_ok=True)
            return cls(directory, settings, {})
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
            entries = dict(recorded["prompts"])
            identity = recorded["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a readable batch manifest ({exc})") from exc
        differ = sorted(
            k
            for k in set(identity) | set(settings.identity())
            if identity.get(k) != settings.identity().get(k)
        )
        if differ:
            details = "; ".join(
                f"{k}: folder has {identity.get(k)!r}, this run {settings.identity().get(k)!r}"
                for k in differ
            )
            raise CheckpointError(
                f"{directory} holds a batch made with other settings ({details}); use a new folder"
            )
        return cls(directory, settings, entries)

    def ensure_entry(self, job: PromptJob, path: Path) -> None:
        """An entry for a graph already on disk (kept from the last run, or read from the file)."""
        if self.entries.get(job.slug, {}).get("status") == "ok":
            return
        from tracewire.graph.graph import Graph
        from tracewire.graph.scores import graph_scores

        try:
            graph = Graph.load(path)
        except GraphFormatError as exc:
            raise CheckpointError(
                f"{path}: a graph of this batch cannot be read ({exc}); delete it to redo it"
            ) from exc
        scores = graph_scores(graph)
        self.entries[job.slug] = {
            "slug": job.slug,
            "prompt": job.prompt,
            "status": "ok",
            "graph": path.name,
            **graph_summary(graph),
            "replacement": scores.replacement,
            "completeness": scores.completeness,
        }

    def record(self, result: dict[str, Any]) -> None:
        """Keep ``result``; rewrite the file at most every SAVE_SECONDS (the graph files are the truth
        a resume relies on, so a crash loses at most the last few statuses, which are then redone)."""
        self.entries[result["slug"]] = result
        if time.monotonic() - self.saved_at >= SAVE_SECONDS:
            self.save()

    def save(self) -> None:
        self.saved_at = time.monotonic()
        atomic_write_json(
            self.path,
            {"format": FORMAT, "settings": self.settings.identity(), "prompts": self.entries},
            allow_nan=True,
        )


def write_index(directory: Path, jobs: Sequence[PromptJob], entries: dict[str, dict[str, Any]]) -> Path:
    """``index.json``: the finished graphs of ``jobs`` in prompt order, and the failures."""
    keys = (
        "slug",
        "prompt",
        "graph",
        "n_tokens",
        "targets",
        "target_probabilities",
        "replacement",
        "completeness",
        "n_features",
        "n_edges",
    )
    graphs, failed = [], []
    for job in jobs:
        entry = entries.get(job.slug)
        if entry is None:
            continue
        if entry.get("status") == "ok":
            graphs.append({key: entry.get(key) for key in keys} | {"graph": f"{GRAPHS}/{entry['graph']}"})
        else:
            failed.append({"slug": job.slug, "prompt": job.prompt, "error": entry.get("error")})
    return atomic_write_json(
        directory / INDEX, {"format": FORMAT, "graphs": graphs, "failed": failed}, allow_nan=True
    )
