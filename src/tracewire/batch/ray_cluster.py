"""Ray, the optional distributed engine batches run on (``pip install tracewire[ray]``).

Ray is imported only here, and only when a batch asks for workers, so tracewire without the extra
runs every serial path and says clearly what to install when Ray is needed.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

from tracewire.batch.worker import AttributionSettings, AttributionWorker
from tracewire.errors import MissingExtraError

log = logging.getLogger(__name__)

Job = TypeVar("Job")


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


def run_on_actors(
    settings: AttributionSettings,
    jobs: Sequence[Job],
    call: Callable[[Any, Job], Any],
    record: Callable[[dict[str, Any]], None],
    failure: Callable[[Job, str], dict[str, Any]],
    *,
    workers: int,
    address: str | None,
    describe: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[Job]:
    """Run ``jobs`` on ``workers`` :class:`AttributionWorker` actors, one job per actor at a time.

    ``call(actor, job)`` starts a job (an ObjectRef of its result dict); every result goes to
    ``record``. A job whose actor dies is recorded as ``failure(job, "worker died: ...")`` and that
    actor gets no more jobs; a job that raises is recorded as ``failure(job, message)``. Returns the
    jobs never started (every worker died). The actors are killed at the end, which frees their
    CPUs and GPUs also on a cluster that outlives the batch.
    """
    threads = max(settings.threads, 1)
    with ray_session(workers=workers, threads=threads, address=address) as ray:
        actor_class = ray.remote(num_cpus=threads, num_gpus=gpus_per_worker(ray), max_restarts=0)(
            AttributionWorker
        )
        actors = [actor_class.remote(settings) for _ in range(workers)]
        try:
            descriptions = ray.get([actor.describe.remote() for actor in actors])
            if describe is not None:
                describe(descriptions)
            return _feed(ray, actors, jobs, call, record, failure)
        finally:
            for actor in actors:
                ray.kill(actor)


def _feed(
    ray: ModuleType,
    actors: list[Any],
    jobs: Sequence[Job],
    call: Callable[[Any, Job], Any],
    record: Callable[[dict[str, Any]], None],
    failure: Callable[[Job, str], dict[str, Any]],
) -> list[Job]:
    queue = deque(jobs)
    in_flight: dict[Any, tuple[Any, Job]] = {}

    def submit(actor: Any) -> None:
        if queue:
            job = queue.popleft()
            in_flight[call(actor, job)] = (actor, job)

    for actor in actors:
        submit(actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        actor, job = in_flight.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayActorError as exc:
            log.warning("a worker died (%s); going on without it", exc)
            record(failure(job, f"worker died: {exc}"))
            continue
        except ray.exceptions.RayTaskError as exc:
            result = failure(job, str(exc))
        record(result)
        submit(actor)
    return list(queue)
