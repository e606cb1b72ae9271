"""Ray, the optional distributed engine batches run on (``pip install tracewire[ray]``).

Ray is imported only here, and only when a batch asks for workers, so tracewire without the extra
runs every serial path and says clearly what to install when Ray is needed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from tracewire.errors import MissingExtraError

log = logging.getLogger(__name__)


def require_ray() -> ModuleType:
    """The ``ray`` module, or MissingExtraError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(
            "running a batch on workers needs Ray, which is not installed: "
            "pip install 'tracewire[ray]' (or run without --workers / --ray-address for one process)"
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(*, workers: int, threads: int, address: str | None) -> Iterator[ModuleType]:
    """Connect to ``address`` (an existing cluster), or start a local one sized for the workers.

    A cluster this function started is shut down on exit; one that was already running (the caller
    called ``ray.init`` itself, or ``address`` names a cluster) is left running.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers * threads, **options)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def gpus_per_worker(ray: ModuleType) -> float:
    """One GPU per worker where the cluster has GPUs, none elsewhere."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
