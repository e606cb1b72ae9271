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

``record(tokens)`` runs the clean forward and returns a :class:`FrozenRun` whose
:class:`FrozenState` can be ``replay``-ed over any inputs of that length or a prefix of it; a
replay is exactly linear in its embeddings (the MLP outputs become ``skip(x) + constant``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from tracewire.errors import InvalidArgumentError, TranscoderFormatError
from tracewire.models.loading import LoadedModel
from tracewire.replacement import state as st
from tracewire.replacement.frozen_attention import frozen_attention
from tracewire.replacement.linear_norms import linear_norm, norm_scale
from tracewire.replacement.state import FrozenRun, FrozenState, StopForward


class ReplacementModel:
    """A :class:`LoadedModel` paired with a transcoder set (or none: a plain frozen model)."""

    def __init__(self, loaded: LoadedModel, transcoders: Any | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.adapter = loaded.adapter
        self.transcoders = transcoders
        self.n_layers = loaded.n_layers
        if transcoders is not None:
            from tracewire.transcoders import sites

            if transcoders.n_layers != self.n_layers:
                raise TranscoderFormatError(
                    f"transcoders have {transcoders.n_layers} layers but model {loaded.name!r} "
                    f"has {self.n_layers}"
                )
            if transcoders.d_model != loaded.d_model:
                raise TranscoderFormatError(
                    f"transcoders expect d_model={transcoders.d_model} but model {loaded.name!r} has "
                    f"d_model={loaded.d_model}"
                )
            cfg = transcoders.config
            self.input_site = sites.input_site(cfg.feature_input_hook)
            self.output_site = sites.output_site(cfg.feature_output_hook)
        else:
            self.input_site, self.output_site = "mlp_in", "mlp_out"

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

    # -- machinery -----------------------------------------------------------------------------
    def _forward(self, run: FrozenRun, ids: torch.Tensor) -> None:
        token = st.activate(run)
        try:
            with ExitStack() as stack:
                run.base_attention = stack.enter_context(frozen_attention(self.model))
                stack.enter_context(self._patched(run))
                try:
                    out = self.model(input_ids=ids, use_cache=False)
                    run.logits = out.logits
                except StopForward:
                    pass
        finally:
            st.deactivate(token)

    @contextmanager
    def _patched(self, run: FrozenRun) -> Iterator[None]:
        model, adapter = self.model, self.adapter
        patches: list[tuple[nn.Module, Callable[..., Any]]] = []
        patches.append((adapter.embed_module(model), self._embed_forward(run, adapter.embed_module(model))))
        for layer in range(self.n_layers):
            norms = adapter.norm_modules(model, layer)
            mlp = adapter.mlp_module(model, layer)
            post_mlp_is_output = self.output_site == "mlp_block_out" and "post_mlp" in norms
            for role, norm in norms.items():
                path = f"{layer}.{role}"
                if role == "post_mlp" and post_mlp_is_output:
                    patches.append((norm, self._output_forward(run, layer, norm)))
                else:
                    capture = role == "pre_mlp" and self.input_site == "resid_mid"
                    patches.append((norm, self._norm_forward(run, norm, path, layer if capture else None)))
            patches.append((mlp, self._mlp_forward(run, layer, mlp, post_mlp_is_output)))
        final = adapter.final_norm_module(model)
        patches.append((final, self._norm_forward(run, final, "final", None, final=True)))
        try:
            for module, fn in patches:
                module.forward = fn  # type: ignore[method-assign]
            yield
        finally:
            for module, _ in patches:
                module.__dict__.pop("forward", None)

    def _embed_forward(self, run: FrozenRun, module: nn.Module) -> Callable[..., Any]:
        original = type(module).forward

        def forward(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if run.embedding_override is not None:
                leaf = run.embedding_override
            else:
                with torch.no_grad():
                    value = original(module, input_ids, *args, **kwargs)
                leaf = value.detach().requires_grad_(True)
            run.embeddings = leaf
            return leaf

        return forward

    def _norm_forward(
        self, run: FrozenRun, module: nn.Module, path: str, capture_layer: int | None, *, final: bool = False
    ) -> Callable[..., Any]:
        original = type(module).forward
        kind = self.adapter.norm_kind
        eps = self.adapter.norm_eps(module)

        def forward(x: torch.Tensor) -> torch.Tensor:
            if capture_layer is not None:
                self._capture_input(run, capture_layer, x)
            if run.mode == "record":
                scale = norm_scale(kind, x, eps)
                run.state.norm_scales[path] = scale[:1]
                with torch.no_grad():
                    value = original(module, x)
                lin = linear_norm(kind, module, x, scale)
                out = value + (lin - lin.detach())
            else:
                scale = run.state.norm_scales[path][:, : x.shape[1]]
                out = linear_norm(kind, module, x, scale)
            if final:
                run.final_resid = out
                if run.stop_after_layer is not None and run.stop_after_layer >= self.n_layers:
                    raise StopForward
            return out

        return forward

    def _mlp_forward(
        self, run: FrozenRun, layer: int, module: nn.Module, post_norm_is_output: bool
    ) -> Callable[..., Any]:
        original = type(module).forward

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self.input_site == "mlp_in":
                self._capture_input(run, layer, x)
            if post_norm_is_output:  # the post-MLP norm's output is the site; it applies the skip trick
                if run.mode == "replay":
                    return torch.zeros_like(x)
                with torch.no_grad():
                    return original(module, x, *args, **kwargs)
            return self._site_output(run, layer, lambda: original(module, x, *args, **kwargs))

        return forward

    def _output_forward(self, run: FrozenRun, layer: int, module: nn.Module) -> Callable[..., Any]:
        original = type(module).forward

        def forward(h: torch.Tensor) -> torch.Tensor:
            return self._site_output(run, layer, lambda: original(module, h))

        return forward

    def _site_output(self, run: FrozenRun, layer: int, value_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        x_in = run.transcoder_inputs[layer]
        has_skip = self.transcoders is not None and self.transcoders.has_skip
        if run.mode == "replay" and not has_skip:
            # Nothing flows back through a skip-less MLP: its output is a fresh leaf (so gradients
            # can still be asked of it) and the backward never walks the zero path into x. The leaf
            # is a broadcast view of the one stored copy: B copies cost no memory.
            const = run.state.mlp_constants[layer][:, : x_in.shape[1]].to(x_in.dtype)
            out = const.expand(x_in.shape[0], -1, -1).requires_grad_(x_in.requires_grad)
            run.outputs[layer] = out
            return out
        skip = self.skip(layer, x_in)
        if run.mode == "record":
            with torch.no_grad():
                value = value_fn()
            run.output_values[layer] = value
            run.state.mlp_constants[layer] = (value - skip.detach())[:1]
            out = value + (skip - skip.detach())
        else:
            const = run.state.mlp_constants[layer][:, : x_in.shape[1]]
            out = skip + const
        run.outputs[layer] = out
        return out

    def _capture_input(self, run: FrozenRun, layer: int, x: torch.Tensor) -> None:
        run.transcoder_inputs[layer] = x
        if run.stop_after_layer is not None and run.stop_after_layer == layer:
            raise StopForward
