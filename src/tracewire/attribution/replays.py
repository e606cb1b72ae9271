"""Retained linear replays, one per prefix-length bucket.

Each batch of targets needs a linear replay of the prompt prefix that covers its positions. A
replay's backward graph is tiny — weights are frozen, so linear layers save nothing; only the
attention patterns of short prefixes and the norm scales are referenced — so a replay can be kept
and reused by every batch whose positions fit, paying its forward once instead of once per batch
(circuit-tracer retains one forward over the whole prompt for the same reason). Buckets are
powers of two (capped at the prompt length), so a batch never replays more than twice the
positions it needs; an LRU bound on the memory they hold keeps long prompts in budget.

A kept replay holds *gradient edges* (``torch.autograd.graph.GradientEdge``) to its sites, not
the site tensors: the activations of ``B`` copies of the prefix at every layer are never needed by
the backward of a linear model, and holding them cost ``3 × layers × B × P × d`` floats (0.6 GiB
at 512 tokens). Targets are read by seeding the backward at those edges.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.autograd.graph import GradientEdge, get_gradient_edge

from tracewire.attribution.batching import replay_bucket
from tracewire.replacement.frozen_attention import keeps_pattern
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun, FrozenState

#: Memory the kept replays may hold (saved attention patterns and embedding leaves).
REPLAY_CACHE_BYTES = 512 * 2**20


@dataclass
class RetainedReplay:
    """A linear replay's autograd graph, reachable through edges to its sites.

    ``embeddings`` is the leaf ``[copies, length, d]``; ``outputs[l]`` / ``inputs[l]`` are edges to
    layer ``l``'s output site and transcoder input; ``final`` to the final-norm output.
    """

    embeddings: torch.Tensor
    outputs: dict[int, GradientEdge]
    inputs: dict[int, GradientEdge]
    final: GradientEdge | None

    @property
    def copies(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def length(self) -> int:
        return int(self.embeddings.shape[1])

    @staticmethod
    def from_run(run: FrozenRun) -> RetainedReplay:
        """Keep ``run``'s graph and drop its activations (the run must not be used afterwards)."""
        assert run.embeddings is not None

        def edges(sites: dict[int, torch.Tensor]) -> dict[int, GradientEdge]:
            return {layer: get_gradient_edge(t) for layer, t in sites.items() if t.requires_grad}

        final = run.final_resid
        replay = RetainedReplay(
            embeddings=run.embeddings,
            outputs=edges(run.outputs),
            inputs=edges(run.transcoder_inputs),
            final=get_gradient_edge(final) if final is not None and final.requires_grad else None,
        )
        run.outputs.clear()
        run.transcoder_inputs.clear()
        run.final_resid = run.logits = None
        return replay

    def zeros(self) -> torch.Tensor:
        """A tensor shaped like every site: ``[copies, length, d]``."""
        return torch.zeros_like(self.embeddings, requires_grad=False)


class ReplayCache:
    def __init__(
        self, rm: ReplacementModel, state: FrozenState, *, max_bytes: int = REPLAY_CACHE_BYTES
    ) -> None:
        self.rm, self.state, self.max_bytes = rm, state, max_bytes
        self.runs: OrderedDict[tuple[int, int], RetainedReplay] = OrderedDict()
        self.sizes: dict[tuple[int, int], int] = {}
        self.forwards = 0

    def get(self, length: int, batch: int) -> RetainedReplay:
        """A replay covering ``length`` positions with at least ``batch`` copies."""
        key = (replay_bucket(length, self.state.n_pos), batch)
        kept = self.runs.get(key)
        if kept is not None:
            self.runs.move_to_end(key)
            return kept
        run = self.rm.replay(self.state, length=key[0], batch=batch, stop_after_layer=self.rm.n_layers)
        self.forwards += 1
        kept = RetainedReplay.from_run(run)
        self.runs[key], self.sizes[key] = kept, self.held_bytes(key[0], batch)
        while sum(self.sizes.values()) > self.max_bytes and len(self.runs) > 1:
            old, _ = self.runs.popitem(last=False)
            del self.sizes[old]
        return kept

    def keeps_patterns(self, length: int) -> bool:
        """Whether a replay of ``length`` positions keeps its attention patterns for backward
        (else every forward and backward pass recomputes them)."""
        heads = int(getattr(self.rm.loaded.config, "num_attention_heads", 1))
        return keeps_pattern(heads, length, length)

    def held_bytes(self, length: int, batch: int) -> int:
        """What a kept replay references: the embedding leaf and short prefixes' patterns."""
        loaded = self.rm.loaded
        element = torch.finfo(loaded.dtype).bits // 8
        heads = int(getattr(loaded.config, "num_attention_heads", 1))
        patterns = self.rm.n_layers * heads * length * length * 4 if self.keeps_patterns(length) else 0
        return batch * length * loaded.d_model * element + patterns

    def clear(self) -> None:
        self.runs.clear()
        self.sizes.clear()
