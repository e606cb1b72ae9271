"""Freed heap memory handed back to the operating system (glibc only)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tracewire.memory import _malloc_trim, release_free_heap


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_freed_heap_below_a_live_block_is_returned() -> None:
    if _malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim (musl?)")
    # 100 KB tensors come from glibc's heap (below its mmap threshold); a small tensor allocated
    # after each stays alive, so the freed ones are holes between live blocks that free() never
    # returns to the system (only a free top of the heap shrinks by itself)
    chunks, pins = [], []
    for _ in range(3000):  # ~300 MB, pages touched
        chunks.append(torch.ones(25_000))
        pins.append(torch.ones(1024))
    del chunks
    kept = _resident_bytes()
    release_free_heap()
    after = _resident_bytes()
    assert after < kept - 150 * 2**20
    assert sum(float(pin.sum()) for pin in pins) == 3000 * 1024
