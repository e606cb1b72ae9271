"""One intra-op thread for the tiny tensors of these tests: on a shared 2-core box, OpenMP threads
spin-waiting for a busy core make tiny matmuls ~10x slower than a single thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
