"""``build_sharded_store``: a dashboard build split over workers, merged into one feature store.

The features are cut into ``shards`` contiguous feature-id ranges (every layer) or layer ranges
(all features); each shard is an ordinary resumable build (``build_feature_store``) into its own
store under ``{output}.shards/``, on a Ray worker or one after the other here. The shards are then
merged (``dashboards/merge.py``) into ``output``, which holds the same rows as a single-process
build of all features, and the shard folder is removed. A re-run after a crash resumes each shard.

Every worker reads the whole corpus sample (a card needs every window), so sharding divides the
encoder matmuls and card writing, not the model forwards: it pays when features dominate (large
transcoders), which is the case that outgrows one machine.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tracewire.batch.worker import AttributionSettings, AttributionWorker, DashboardShard
from tracewire.dashboards.config import DashboardConfig
from tracewire.dashboards.merge import merge_feature_stores
from tracewire.errors import InvalidArgumentError, TracewireError

log = logging.getLogger(__name__)


def shard_ranges(
    n_layers: int, d_transcoder: int, shards: int, by: str
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``shards`` (layers, features) half-open ranges that cover every feature once."""
    if by not in ("features", "layers"):
        raise InvalidArgumentError(f"shard by {by!r}; expected 'features' or 'layers'")
    size = n_layers if by == "layers" else d_transcoder
    if not 1 <= shards <= size:
        raise InvalidArgumentError(f"shards={shards}; expected 1..{size} (one {by[:-1]} at least per shard)")
    cuts = [round(i * size / shards) for i in range(shards + 1)]
    spans = [(cuts[i], cuts[i + 1]) for i in range(shards)]
    if by == "layers":
        return [(span, (0, d_transcoder)) for span in spans]
    return [((0, n_layers), span) for span in spans]


def build_sharded_store(
    settings: AttributionSettings,
    corpus: str | Path,
    output: str | Path,
    *,
    tokens: int,
    shards: int,
    n_layers: int,
    d_transcoder: int,
    by: str = "features",
    workers: int = 0,
    ray_address: str | None = None,
    config: DashboardConfig | None = None,
    batch_windows: int = 16,
    progress: bool = True,
) -> Path:
    """Build the dashboards of every feature in ``shards`` pieces and merge them into ``output``."""
    output = Path(output).expanduser().resolve()
    shard_dir = output.parent / f"{output.name}.shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    config_dict = (config or DashboardConfig()).to_dict()
    jobs = [
        DashboardShard(
            index=i,
            layers=layers,
            features=features,
            corpus=str(Path(corpus).expanduser().resolve()),
            output=str(shard_dir / f"shard-{i:03d}.sqlite"),
            tokens=tokens,
            config=config_dict,
            batch_windows=batch_windows,
        )
        for i, (layers, features) in enumerate(shard_ranges(n_layers, d_transcoder, shards, by))
    ]
    bar = tqdm(total=len(jobs), desc="dashboard shards", unit="shard", disable=not progress)
    failures: list[str] = []

    def record(result: dict[str, Any]) -> None:
        if result["status"] != "ok":
            failures.append(f"shard {result['shard']}: {result['error']}")
        bar.update(1)

    try:
        if workers == 0 and ray_address is None:
            worker = AttributionWorker(settings)
            for job in jobs:
                record(worker.build_dashboard_shard(job))
        else:
            from tracewire.batch.ray_cluster import run_on_actors

            pending = run_on_actors(
                settings,
                jobs,
                lambda actor, job: actor.build_dashboard_shard.remote(job),
                record,
                lambda job, error: {"shard": job.index, "status": "failed", "error": error},
                workers=max(workers, 1),
                address=ray_address,
            )
            failures += [f"shard {job.index}: not run (no worker left)" for job in pending]
    finally:
        bar.close()
    if failures:
        raise TracewireError(
            "dashboard shards failed (" + "; ".join(failures) + "); run the same command again to resume them"
        )
    n = merge_feature_stores([job.output for job in jobs], output)
    log.info("merged %d shards into %s (%d cards)", len(jobs), output, n)
    shutil.rmtree(shard_dir)
    return output
