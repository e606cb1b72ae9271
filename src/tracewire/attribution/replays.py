"""Retained linear replays, one per prefix-length bucket.

Each batch of targets needs a linear replay of the prompt prefix that covers its positions. A
replay's backward graph is tiny — weights are frozen, so linear layers save nothing; only the
cached queries/keys and norm scales are referenced — so a replay can be kept and reused by every
batch whose positions fit, paying its forward once instead of once per batch (circuit-tracer
retains one forward over the whole prompt for the same reason). Buckets are powers of two
(capped at the prompt length), so a batch never replays more than twice the positions it needs;
an LRU bound on the memory their activations hold keeps long prompts in budget.
"""

from __future__ import annotations

from collections import OrderedDict

from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun, FrozenState

#: Memory the kept replays' activations may hold (approximate, from their site tensors).
REPLAY_CACHE_BYTES = 1 * 2**30


class ReplayCache:
    def __init__(
        self, rm: ReplacementModel, state: FrozenState, *, max_bytes: int = REPLAY_CACHE_BYTES
    ) -> None:
        self.rm, self.state, self.max_bytes = rm, state, max_bytes
        self.runs: OrderedDict[tuple[int, int], FrozenRun] = OrderedDict()
        self.sizes: dict[tuple[int, int], int] = {}
        self.forwards = 0

    def bucket(self, length: int) -> int:
        n_pos = self.state.n_pos
        size = 1
        while size < length:
            size *= 2
        return min(size, n_pos)

    def get(self, length: int, batch: int) -> FrozenRun:
        """A replay covering ``length`` positions with at least ``batch`` copies."""
        key = (self.bucket(length), batch)
        run = self.runs.get(key)
        if run is not None:
            self.runs.move_to_end(key)
            return run
        run = self.rm.replay(self.state, length=key[0], batch=batch, stop_after_layer=self.rm.n_layers)
        self.forwards += 1
        assert run.embeddings is not None
        d_model = run.embeddings.shape[-1]
        size = 3 * self.rm.n_layers * batch * key[0] * d_model * run.embeddings.element_size()
        self.runs[key], self.sizes[key] = run, size
        while sum(self.sizes.values()) > self.max_bytes and len(self.runs) > 1:
            old, _ = self.runs.popitem(last=False)
            del self.sizes[old]
        return run

    def clear(self) -> None:
        self.runs.clear()
        self.sizes.clear()
