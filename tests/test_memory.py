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
    # after them stays alive, so the heap's top cannot shrink on its own when they are freed
    chunks = [torch.ones(25_000) for _ in range(3000)]  # ~300 MB, pages touched
    pin = torch.ones(8)
    before_free = _resident_bytes()
    del chunks
    kept = _resident_bytes()
    release_free_heap()
    after = _resident_bytes()
    assert kept > before_free - 100 * 2**20  # glibc kept (most of) what was freed...
    assert after < kept - 200 * 2**20  # ...and gave it back when asked
    assert pin.sum() == 8


def test_release_is_harmless_to_call_repeatedly() -> None:
    for _ in range(3):
        release_free_heap()
