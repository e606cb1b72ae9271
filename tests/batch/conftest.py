"""One intra-op thread for the tiny tensors of these tests (see tests/factories/threads.py), and one local
2-CPU Ray cluster shared by the tests that need it (started on first use, shut down at the end)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.factories.threads import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """``ray`` with a local cluster of 2 CPUs (the tests' 2 workers x 1 thread); skips without Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
