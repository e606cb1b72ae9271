"""What a frozen run remembers, and which run is active.

A *record* run is the clean forward of one prompt: it stores everything the local replacement
model holds constant — queries and keys (hence attention patterns), the scale of every norm,
and each MLP's output minus its transcoder skip path — while building a backward graph that is
linear. A *replay* run uses a stored :class:`FrozenState` for a forward over any inputs of the
same (or shorter, prefix) length: the model is then exactly linear in its embeddings, so its
gradients are the attribution Jacobian, and a batch of ``B`` replays of a prefix gives ``B``
attribution rows for the price of one small forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Mode = Literal["record", "replay"]


@dataclass
class FrozenState:
    """Constants of the local replacement model for one prompt (batch element 0 of the record run)."""

    tokens: torch.Tensor
    queries: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1, H, P, dh]
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1, Hkv, P, dh]
    norm_scales: dict[str, torch.Tensor] = field(default_factory=dict)  # norm path -> [1, P, 1] (float32)
    mlp_constants: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1, P, d] (out - skip)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[-1])

    def record_qk(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        self.queries[layer] = q[:1]
        self.keys[layer] = k[:1]

    def replay_qk(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.queries[layer][:, :, :length], self.keys[layer][:, :, :length]

    def nbytes(self) -> int:
        tensors = [
            *self.queries.values(),
            *self.keys.values(),
            *self.norm_scales.values(),
            *self.mlp_constants.values(),
        ]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class FrozenRun:
    """One forward pass under the frozen regime, and the tensors it exposes for gradients.

    ``embeddings`` is a leaf tensor ``[B, P, d]`` (requires grad); ``transcoder_inputs[l]`` and
    ``outputs[l]`` are the transcoder's input site and output site at layer ``l`` (in the autograd
    graph); ``output_values[l]`` the true (detached) output-site values (record mode only);
    ``final_resid`` the final-norm output that the unembedding reads.
    """

    mode: Mode
    state: FrozenState
    n_layers: int = 0
    embeddings: torch.Tensor | None = None
    transcoder_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    output_values: dict[int, torch.Tensor] = field(default_factory=dict)
    final_resid: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    stop_after_layer: int | None = None
    embedding_override: torch.Tensor | None = None
    mask_cache: dict[int, torch.Tensor | None] = field(default_factory=dict)
    mask_refs: list[torch.Tensor] = field(default_factory=list)
