"""Many prompts at once: batch attribution (serially or on Ray workers) and sharded dashboards.

- ``read_prompts``: a prompts file (one prompt a line, or JSONL with prompt, targets, budget, slug);
- ``run_batch``: attribute every prompt into ``DIR/graphs/``, resumable, with a manifest of
  failures and an ``index.json`` of prompts, graphs, targets and scores (``runner.py``);
- ``AttributionWorker``: what each Ray actor is — the model and transcoders loaded once;
- ``build_sharded_store``: dashboards built in feature shards (on Ray workers or one after the
  other) and merged into one store identical to a single-process build (``dashboards.py``).

Ray is optional (``pip install tracewire[ray]``); without it everything runs in one process.
"""

from tracewire.batch.prompts import PromptJob, read_prompts
from tracewire.batch.runner import BatchReport, run_batch
from tracewire.batch.worker import AttributionSettings, AttributionWorker

__all__ = [
    "AttributionSettings",
    "AttributionWorker",
    "BatchReport",
    "PromptJob",
    "read_prompts",
    "run_batch",
]
