"""One intra-op thread for the tiny tensors of some test packages: on a shared 2-core box, OpenMP
threads spin-waiting for a busy core make tiny matmuls ~10x slower than a single thread.

A package opts in by importing ``one_thread`` into its ``conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
