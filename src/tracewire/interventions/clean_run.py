"""The clean forward an intervention is measured against, and everything it must remember.

Interventions are differences from a clean run: frozen attention replays its queries and keys,
frozen norms its scales, constrained layers its feature activations, and errors are held at its
``MLP output − reconstruction``. One :class:`CleanRun` serves any number of interventions on the
same prompt (the faithfulness harness ablates dozens of features against one clean run).

Recording does not change a single value: the model's own attention function is called with the
same arguments, norms and MLPs run their own forwards, and the logits equal a plain forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tracewire.models.adapters import Adapter
from tracewire.models.attention_routing import AttentionCall
from tracewire.models.hooks import Live, Original, Session
from tracewire.replacement.linear_norms import linear_norm, norm_scale
from tracewire.replacement.state import FrozenState
from tracewire.transcoders.base import TranscoderSet


@dataclass
class NormRecord:
    """One norm in the clean run: output ``y`` and the frozen-scale map of the clean input ``lin``
    (so a frozen norm is ``y + lin(x') − lin``, exact when ``x' = x``); its denominator is in
    ``CleanRun.frozen.norm_scales``."""

    y: torch.Tensor  # [1, P, d]
    lin: torch.Tensor  # [1, P, d]


@dataclass
class CleanRun:
    """The clean forward of one prompt (batch of one).

    ``frozen``: what frozen attention and frozen norms hold constant — the queries, keys and norm
    denominators — in the replacement model's own record (:class:`FrozenState`; its
    ``mlp_constants`` stay empty: interventions hold errors, not skip constants, fixed);
    ``inputs[l]`` / ``outputs[l]``: transcoder input and output site of layer ``l`` ``[P, d]``
    (model dtype); ``activations[l]``: feature activations ``[P, d_transcoder]`` (transcoder
    dtype); ``final_residual``: the final-norm output ``[P, d]`` (what logits and graph targets
    read, before any logit softcap).
    """

    tokens: torch.Tensor
    frozen: FrozenState = field(init=False)
    logits: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    norms: dict[str, NormRecord] = field(default_factory=dict)
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    activations: dict[int, torch.Tensor] = field(default_factory=dict)
    skips: dict[int, torch.Tensor] = field(default_factory=dict)
    final_residual: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __post_init__(self) -> None:
        self.frozen = FrozenState(tokens=self.tokens)

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[-1])

    def stacked_activations(self) -> torch.Tensor:
        """``[n_layers, P, d_transcoder]``."""
        return torch.stack([self.activations[layer] for layer in sorted(self.activations)])


class Recorder(Session):
    """The session of the clean pass (see ``tracewire.models.hooks.Session``)."""

    routes_attention = True

    def __init__(self, run: CleanRun, transcoders: TranscoderSet, adapter: Adapter) -> None:
        self.run = run
        self.transcoders = transcoders
        self.adapter = adapter
        self.calls = 0

    def embed(self, input_ids: torch.Tensor, live: Live) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1 or input_ids.shape[0] != 1:
            raise RuntimeError("a clean run is one forward of one prompt")
        return live()

    def attention(self, call: AttentionCall) -> tuple[torch.Tensor, Any]:
        self.run.frozen.record_qk(call.layer, call.query.detach(), call.key.detach())
        return call.own()

    def norm(self, path: str, module: nn.Module, original: Original, x: torch.Tensor) -> torch.Tensor:
        y = original(x)
        kind = self.adapter.norm_kind
        scale = norm_scale(kind, x, self.adapter.norm_eps(module))
        self.run.frozen.norm_scales[path] = scale
        self.run.norms[path] = NormRecord(y=y, lin=linear_norm(kind, module, x, scale))
        return y

    def transcoder_input(self, layer: int, x: torch.Tensor) -> None:
        ts = self.transcoders
        self.run.inputs[layer] = x[0]
        # encoded with the batch axis, exactly as an intervened pass does (bit-identical no-ops)
        xt = x.to(device=ts.device, dtype=ts.dtype)
        self.run.activations[layer] = ts.encode(layer, xt)[0]
        if ts.has_skip:
            self.run.skips[layer] = ts.skip(layer, xt)[0]

    def inner_mlp(self, layer: int, live: Live) -> torch.Tensor:
        return live()

    def output_site(self, layer: int, live: Live) -> torch.Tensor:
        value = live()
        self.run.outputs[layer] = value[0]
        return value

    def final(self, live: Live) -> torch.Tensor:
        value = live()
        self.run.final_residual = value[0]
        return value
