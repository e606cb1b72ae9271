"""The local replacement model: an HF model + transcoders, linearised for one prompt.

Three freezes turn the model's backward pass into a linear map (forward values unchanged):

- attention patterns: a registered attention function (``frozen_attention``) whose gradient
  reaches only the values;
- norm denominators: every norm's forward is swapped for ``y + (lin − lin.detach())`` where
  ``lin`` is the norm with its scale fixed (``linear_norms``), so the value is the original ``y``
  and the gradient is that of the frozen-scale norm;
- MLPs: the transcoder's output site returns ``value.detach() + (skip − skip.detach())``: the
  true MLP output forward, the transcoder's linear skip path backward (``0`` without skip). The
  MLP itself runs under ``no_grad`` so none of its internals are kept for backward.

The model is reached only through the model-access layer (``tracewire.models.hooks``): a
:class:`FrozenPass` is the session that says what each site returns. ``record(tokens)`` runs the
clean forward and returns a :class:`FrozenRun` whose
:class:`FrozenState` can be ``replay``-ed over any inputs of that length or a prefix of it; a
replay is exactly linear in its embeddings (the MLP outputs become ``skip(x) + constant``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tracewire.errors import InvalidArgumentError
from tracewire.memory import release_free_heap
from tracewire.models.attention_routing import AttentionCall
from tracewire.models.hooks import Live, Original, Session, StopForward, Wiring
from tracewire.models.loading import LoadedModel
from tracewire.replacement.frozen_attention import frozen_attention
from tracewire.replacement.linear_norms import linear_norm, norm_scale
from tracewire.replacement.state import FrozenRun, FrozenState
from tracewire.transcoders.base import TranscoderSet


class ReplacementModel:
    """A :class:`LoadedModel` paired with a transcoder set (or none: a plain frozen model)."""

    def __init__(self, loaded: LoadedModel, transcoders: TranscoderSet | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.adapter = loaded.adapter
        self.transcoders = transcoders
        self.n_layers = loaded.n_layers
        if transcoders is not None:
            self.wiring = Wiring.for_transcoders(loaded, transcoders)
        else:
            self.wiring = Wiring(loaded, "mlp_in", "mlp_out")
        self.input_site, self.output_site = self.wiring.input_site, self.wiring.output_site

    # -- public ------------------------------------------------------------------------------
    def record(self, tokens: torch.Tensor, *, stop_after_layer: int | None = None) -> FrozenRun:
        """Clean forward of one prompt (``[P]`` or ``[1, P]`` ids) under the frozen regime."""
        ids = tokens.reshape(1, -1).to(self.loaded.device)
        run = FrozenRun(
            mode="record", state=FrozenState(tokens=ids[0].detach().cpu()), n_layers=self.n_layers
        )
        run.stop_after_layer = stop_after_layer
        self._forward(run, ids)
        return run

    def replay(
        self,
        state: FrozenState,
        *,
        tokens: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        length: int | None = None,
        batch: int = 1,
        stop_after_layer: int | None = None,
    ) -> FrozenRun:
        """A linear forward with ``state``'s constants over the first ``length`` positions.

        Inputs: ``tokens`` (``[P]`` or ``[B, P]``; embedded by the model) or an ``embeddings`` leaf
        ``[B, P, d]`` (used as is, so the caller holds its gradient), else ``state.tokens``.
        ``stop_after_layer=l`` ends the forward as soon as layer ``l``'s transcoder input exists
        (``n_layers``: after the final norm), so work above the causal cone's top is never done.
        """
        length = length if length is not None else state.n_pos
        if length > state.n_pos:
            raise InvalidArgumentError(
                f"replay length {length} exceeds the recorded prompt ({state.n_pos} positions)"
            )
        if embeddings is not None:
            batch = embeddings.shape[0]
            ids = state.tokens[:length].to(self.loaded.device).expand(batch, length)
        elif tokens is not None:
            ids = tokens.reshape(-1, tokens.shape[-1])[:, :length].to(self.loaded.device)
            if ids.shape[0] == 1 and batch > 1:
                ids = ids.expand(batch, length)
        else:
            ids = state.tokens[:length].to(self.loaded.device).expand(batch, length)
        run = FrozenRun(mode="replay", state=state, n_layers=self.n_layers)
        run.stop_after_layer = stop_after_layer
        run.embedding_override = embeddings
        self._forward(run, ids)
        return run

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if self.transcoders is None or not self.transcoders.has_skip:
            return x * 0.0
        return self.transcoders.skip(layer, x)

    def _forward(self, run: FrozenRun, ids: torch.Tensor) -> None:
        out = self.wiring.run(FrozenPass(self, run), ids)
        if out is not None:
            run.logits = out.logits


class FrozenPass(Session):
    """The session of one record or replay forward: what every site returns under the freezes."""

    routes_attention = True

    def __init__(self, replacement: ReplacementModel, run: FrozenRun) -> None:
        self.rm = replacement
        self.run = run
        self.norm_kind = replacement.adapter.norm_kind
        transcoders = replacement.transcoders
        self.has_skip = transcoders is not None and transcoders.has_skip

    def attention(self, call: AttentionCall) -> tuple[torch.Tensor, Any]:
        return frozen_attention(self.run, call)

    def embed(self, input_ids: torch.Tensor, live: Live) -> torch.Tensor:
        run = self.run
        if run.embedding_override is not None:
            leaf = run.embedding_override
        else:
            with torch.no_grad():
                value = live()
            leaf = value.detach().requires_grad_(True)
        run.embeddings = leaf
        return leaf

    def norm(self, path: str, module: nn.Module, original: Original, x: torch.Tensor) -> torch.Tensor:
        run = self.run
        if run.mode == "record":
            scale = norm_scale(self.norm_kind, x, self.rm.adapter.norm_eps(module))
            run.state.norm_scales[path] = scale[:1]
            with torch.no_grad():
                value = original(x)
            lin = linear_norm(self.norm_kind, module, x, scale)
            return value + (lin - lin.detach())
        scale = run.state.norm_scales[path][:, : x.shape[1]]
        return linear_norm(self.norm_kind, module, x, scale)

    def transcoder_input(self, layer: int, x: torch.Tensor) -> None:
        release_free_heap()  # the layer below's temporaries: see tracewire.memory
        self.run.transcoder_inputs[layer] = x
        if self.run.stop_after_layer == layer:
            raise StopForward

    def inner_mlp(self, layer: int, live: Live) -> torch.Tensor:
        # the post-MLP norm's output is the site; it applies the skip trick
        if self.run.mode == "replay":
            return torch.zeros_like(self.run.transcoder_inputs[layer])
        with torch.no_grad():
            return live()

    def output_site(self, layer: int, live: Live) -> torch.Tensor:
        run = self.run
        x_in = run.transcoder_inputs[layer]
        if run.mode == "replay" and not self.has_skip:
            # Nothing flows back through a skip-less MLP: its output is a fresh leaf (so gradients
            # can still be asked of it) and the backward never walks the zero path into x. The leaf
            # is a broadcast view of the one stored copy: B copies cost no memory.
            const = run.state.mlp_constants[layer][:, : x_in.shape[1]].to(x_in.dtype)
            out = const.expand(x_in.shape[0], -1, -1).requires_grad_(x_in.requires_grad)
            run.outputs[layer] = out
            return out
        skip = self.rm.skip(layer, x_in)
        if run.mode == "record":
            with torch.no_grad():
                value = live()
            run.output_values[layer] = value
            run.state.mlp_constants[layer] = (value - skip.detach())[:1]
            out = value + (skip - skip.detach())
        else:
            const = run.state.mlp_constants[layer][:, : x_in.shape[1]]
            out = skip + const
        run.outputs[layer] = out
        return out

    def final(self, live: Live) -> torch.Tensor:
        out = live()
        self.run.final_resid = out
        if self.run.stop_after_layer is not None and self.run.stop_after_layer >= self.rm.n_layers:
            raise StopForward
        return out
