"""The intervened forward: a clean run's constants plus the interventions' changes.

Feature activations at source layer ``i`` are first *current* — the clean activations if ``i`` is
constrained, else the transcoder's encoding of the intervened input — then each intervention
that applies at ``i`` edits them (``new``). What is written at output site ``l``:

- ``propagate="transcoders"`` (default; the replacement model with errors held fixed)::

      out_l = clean_out_l + skip_l(x'_l) − skip_l(x_l) + Σ_{i ≤ l} W_dec^{i→l} (new_i − clean_i)

  so in unconstrained layers every feature's change (interventions *and* the iterative changes
  of later features recomputed from changed inputs) goes through its decoders, while the error
  ``clean_out − reconstruction`` never changes. In constrained layers ``new_i − clean_i`` is just
  the interventions: only direct effects propagate.
- ``propagate="model"`` (the original model): unconstrained layers run their real MLP on the
  changed input and add ``W_dec (new − current)`` of the intervened features only; constrained
  layers are as above.

A pass may carry a batch of sequences, each with its own interventions (the harness ablates
many features in one forward). Only the prompt positions of the clean run have clean
constants. Positions beyond them (tokens being generated) always run the real model — live
attention, live norms, real MLPs — plus the decoder writes of the interventions that apply
there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from tracewire.errors import InvalidArgumentError
from tracewire.interventions.clean_run import CleanRun
from tracewire.interventions.spec import Intervention
from tracewire.models.adapters import Adapter
from tracewire.models.attention_routing import AttentionCall
from tracewire.models.hooks import Live, Original, Session
from tracewire.replacement.linear_norms import linear_norm
from tracewire.transcoders.base import TranscoderSet

Propagation = Literal["transcoders", "model"]
PROPAGATIONS: tuple[str, ...] = ("transcoders", "model")


@dataclass(frozen=True)
class Settings:
    """How an intervened pass treats the prompt positions (see the module docstring)."""

    freeze_attention: bool = True
    freeze_norms: bool = False
    constrained: frozenset[int] = frozenset()
    propagate: Propagation = "transcoders"

    def __post_init__(self) -> None:
        if self.propagate not in PROPAGATIONS:
            raise InvalidArgumentError(
                f"propagate must be one of {', '.join(PROPAGATIONS)}, got {self.propagate!r}"
            )


@dataclass
class PassRecord:
    """What the prompt call of an intervened pass saw: ``[B, P, ...]`` per layer."""

    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    activations: dict[int, torch.Tensor] = field(default_factory=dict)
    final_residual: torch.Tensor | None = None


class InterventionPass(Session):
    """The session of an intervened pass (see ``tracewire.models.hooks.Session``); one per forward
    or generation."""

    routes_attention = True

    def __init__(
        self,
        clean: CleanRun,
        transcoders: TranscoderSet,
        adapter: Adapter,
        batches: list[list[Intervention]],
        settings: Settings,
        *,
        keep_activations: bool = True,
    ) -> None:
        self.clean = clean
        self.ts = transcoders
        self.adapter = adapter
        self.settings = settings
        self.keep_activations = keep_activations
        self.batch = len(batches)
        self.by_layer: dict[int, list[tuple[int, Intervention]]] = {}
        for element, items in enumerate(batches):
            for item in items:
                self.by_layer.setdefault(item.layer, []).append((element, item))
        self.record = PassRecord()
        self.offset = 0
        self.start = 0
        self.length = 0
        self.prompt_call = False
        self.inputs: dict[int, torch.Tensor] = {}
        self.pending: dict[int, torch.Tensor] = {}

    # -- per forward call --------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, live: Live) -> torch.Tensor:
        if input_ids.shape[0] != self.batch:
            raise RuntimeError(
                f"this pass has {self.batch} sets of interventions but got a batch of {input_ids.shape[0]}"
            )
        self.start, self.length = self.offset, int(input_ids.shape[1])
        self.offset += self.length
        self.prompt_call = self.start == 0 and self.length == self.clean.n_pos
        if self.start == 0 and not self.prompt_call:
            raise RuntimeError(
                "the first forward of an intervened pass must be the clean prompt "
                f"({self.clean.n_pos} tokens), got {self.length}"
            )
        self.inputs, self.pending = {}, {}
        return live()

    def _frozen_output(self, layer: int) -> bool:
        return self.prompt_call and (
            layer in self.settings.constrained or self.settings.propagate == "transcoders"
        )

    # -- sites -------------------------------------------------------------------------------------
    def attention(self, call: AttentionCall) -> tuple[torch.Tensor, Any]:
        """The model's own attention function; on the prompt, fed the clean queries and keys."""
        if not (self.prompt_call and self.settings.freeze_attention):
            return call.own()
        query, key = call.query, call.key
        q, k = self.clean.frozen.queries[call.layer], self.clean.frozen.keys[call.layer]
        if q.shape[1:] != query.shape[1:] or k.shape[1:] != key.shape[1:]:
            raise RuntimeError(
                f"layer {call.layer}: frozen attention needs queries/keys shaped like the clean run's "
                f"({tuple(q.shape)}, {tuple(k.shape)}), got ({tuple(query.shape)}, {tuple(key.shape)})"
            )
        if query.shape[0] != q.shape[0]:
            q, k = q.expand(query.shape[0], -1, -1, -1), k.expand(key.shape[0], -1, -1, -1)
        return call.own(q, k)

    def norm(self, path: str, module: nn.Module, original: Original, x: torch.Tensor) -> torch.Tensor:
        if self.prompt_call and self.settings.freeze_norms:
            clean = self.clean.norms[path]
            lin = linear_norm(self.adapter.norm_kind, module, x, self.clean.frozen.norm_scales[path])
            return clean.y + (lin - clean.lin)
        return original(x)

    def transcoder_input(self, layer: int, x: torch.Tensor) -> None:
        ts = self.ts
        self.inputs[layer] = x
        if self.prompt_call:
            self.record.inputs[layer] = x
        applicable = [
            (element, item, where)
            for element, item in self.by_layer.get(layer, ())
            if (where := item.positions(self.start, self.length, self.clean.n_pos))
        ]
        if not self.prompt_call and not applicable:
            return
        clean_acts = self.clean.activations[layer][None] if self.prompt_call else None
        if clean_acts is not None and layer in self.settings.constrained:
            current = clean_acts.expand(x.shape[0], -1, -1)
        else:
            current = ts.encode(layer, x.to(device=ts.device, dtype=ts.dtype))  # [B, T, d_tc]
        new = current
        if applicable:
            new = current.clone()
            for element, item, where in applicable:
                index = torch.tensor(where, device=new.device)
                new[element, index, item.feature] = item.apply(new[element, index, item.feature])
        if self.prompt_call and self.keep_activations:
            self.record.activations[layer] = new
        transcoders_mode = self.prompt_call and self.settings.propagate == "transcoders"
        reference = clean_acts if transcoders_mode and clean_acts is not None else current
        self._write(layer, new - reference)

    def _write(self, layer: int, delta: torch.Tensor) -> None:
        """Add ``W_dec delta`` (``delta``: ``[B, T, d_tc]``) to every output layer the features write to."""
        columns = delta.ne(0).flatten(0, -2).any(dim=0).nonzero().squeeze(1)
        if columns.numel() == 0:
            return
        rows = self.ts.decoder_vectors(layer, columns)  # [n, n_out, d]
        writes = torch.einsum("btn,nod->btod", delta[..., columns], rows.to(delta.dtype))
        for j, target in enumerate(self.ts.output_layers(layer)):
            previous = self.pending.get(target)
            self.pending[target] = writes[:, :, j] if previous is None else previous + writes[:, :, j]

    def inner_mlp(self, layer: int, live: Live) -> torch.Tensor:
        if self._frozen_output(layer):  # the post-MLP norm (the output site) will not read it
            return torch.zeros_like(self.inputs[layer])
        return live()

    def output_site(self, layer: int, live: Live) -> torch.Tensor:
        if self._frozen_output(layer):
            out = self.clean.outputs[layer][None].expand(self.batch, -1, -1)
            if self.ts.has_skip:
                x = self.inputs[layer].to(device=self.ts.device, dtype=self.ts.dtype)
                change = self.ts.skip(layer, x) - self.clean.skips[layer]
                out = out + change.to(device=out.device, dtype=out.dtype)
        else:
            out = live()
        pending = self.pending.get(layer)
        if pending is not None:
            out = out + pending.to(device=out.device, dtype=out.dtype)
        return out

    def final(self, live: Live) -> torch.Tensor:
        value = live()
        if self.prompt_call:
            self.record.final_residual = value
        return value
