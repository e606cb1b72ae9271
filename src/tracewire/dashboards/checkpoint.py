"""Build checkpoints: the accumulators of an unfinished pass, so an interrupted build resumes exactly.

One safetensors file per build job, next to the store: ``<store>.job-<selection hash>.ckpt``
(no pickle). Its header metadata holds the format name, the build description (it must equal the
resuming build's) and how many corpus windows are done; its tensors are every layer job's state.
Written to a temporary file and renamed, so a crash while writing leaves the previous checkpoint.
Deleted once every card of the job is in the store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from tracewire.atomic import atomic_write_with
from tracewire.dashboards.store import FeatureStoreError

log = logging.getLogger(__name__)

FORMAT = "tracewire-dashboard-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    build: dict[str, Any]
    windows_done: int
    tensors: dict[str, Tensor]


def checkpoint_path(store_path: Path, selection_key: str) -> Path:
    return store_path.with_name(f"{store_path.name}.job-{selection_key}.ckpt")


def save_checkpoint(path: Path, build: dict[str, Any], windows_done: int, tensors: dict[str, Tensor]) -> None:
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "build": json.dumps(build, sort_keys=True),
        "windows_done": str(windows_done),
    }
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_with(path, lambda temp: save_file(cpu, temp, metadata=metadata))
    log.info("checkpoint %s: %d windows done", path, windows_done)


def load_checkpoint(path: Path, build: dict[str, Any]) -> Checkpoint:
    """Read a checkpoint and check that it belongs to ``build`` (else a clear error)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for damaged files
        raise FeatureStoreError(
            f"{path}: unreadable build checkpoint ({exc}); delete it to start over"
        ) from exc
    if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
        raise FeatureStoreError(
            f"{path}: not a version-{VERSION} {FORMAT} file (format={metadata.get('format')!r}, "
            f"version={metadata.get('version')!r}); delete it to start over"
        )
    recorded = json.loads(metadata["build"])
    if recorded != json.loads(json.dumps(build, sort_keys=True)):
        differ = sorted(k for k in set(recorded) | set(build) if recorded.get(k) != build.get(k))
        raise FeatureStoreError(
            f"{path} is the checkpoint of another build (differs in {', '.join(differ)}); "
            "delete it or run the same build again to resume"
        )
    return Checkpoint(build=recorded, windows_done=int(metadata["windows_done"]), tensors=tensors)
