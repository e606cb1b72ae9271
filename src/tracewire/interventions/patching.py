"""Where an intervention pass touches the model: one patched ``forward`` per relevant module.

The modules come from the adapter row (embedding, every norm, every MLP, the final norm); the
transcoder's input and output sites decide which of them report "transcoder input of layer l"
and which return "output site of layer l". Each patched forward only asks the active
:class:`Session` what to return, so the clean recording pass and the intervened pass share one
wiring and differ only in their session. Patches are instance attributes, removed on exit (as in
``tracewire.replacement.model``), so a model is never left modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from tracewire.interventions.attention import AttentionHandler, routed_attention
from tracewire.models.loading import LoadedModel

Live = Callable[[], torch.Tensor]
Original = Callable[[torch.Tensor], torch.Tensor]


class Session(AttentionHandler, Protocol):
    """What a pass decides at each site. ``live`` computes the model's own value on demand."""

    def on_embed(self, input_ids: torch.Tensor) -> None: ...

    def norm(self, path: str, module: nn.Module, original: Original, x: torch.Tensor) -> torch.Tensor: ...

    def transcoder_input(self, layer: int, x: torch.Tensor) -> None: ...

    def inner_mlp(self, layer: int, live: Live) -> torch.Tensor: ...

    def output_site(self, layer: int, live: Live) -> torch.Tensor: ...

    def final(self, live: Live) -> torch.Tensor: ...


class Wiring:
    """The modules of one model that an intervention pass patches, and how."""

    def __init__(self, loaded: LoadedModel, input_site: str, output_site: str) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.adapter = loaded.adapter
        self.n_layers = loaded.n_layers
        self.input_site = input_site
        self.output_site = output_site

    @contextmanager
    def active(self, session: Session) -> Iterator[None]:
        """Patch the model to consult ``session`` (attention routed too) until the context exits."""
        patches = self._patches(session)
        with ExitStack() as stack:
            stack.enter_context(routed_attention(self.model, session))
            try:
                for module, fn in patches:
                    module.forward = fn  # type: ignore[method-assign]
                yield
            finally:
                for module, _ in patches:
                    module.__dict__.pop("forward", None)

    def _patches(self, session: Session) -> list[tuple[nn.Module, Callable[..., Any]]]:
        model, adapter = self.model, self.adapter
        embed = adapter.embed_module(model)
        patches: list[tuple[nn.Module, Callable[..., Any]]] = [(embed, _embed(session, embed))]
        for layer in range(self.n_layers):
            norms = adapter.norm_modules(model, layer)
            post_is_output = self.output_site == "mlp_block_out" and "post_mlp" in norms
            for role, norm in norms.items():
                path = f"{layer}.{role}"
                if role == "post_mlp" and post_is_output:
                    patches.append((norm, _output_norm(session, layer, path, norm)))
                else:
                    capture = layer if role == "pre_mlp" and self.input_site == "resid_mid" else None
                    patches.append((norm, _norm(session, path, norm, capture)))
            mlp = adapter.mlp_module(model, layer)
            patches.append((mlp, _mlp(session, layer, mlp, self.input_site == "mlp_in", post_is_output)))
        final = adapter.final_norm_module(model)
        patches.append((final, _final(session, final)))
        return patches


def _embed(session: Session, module: nn.Module) -> Callable[..., Any]:
    original = type(module).forward

    def forward(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        session.on_embed(input_ids)
        return original(module, input_ids, *args, **kwargs)  # type: ignore[no-any-return]

    return forward


def _bound(module: nn.Module) -> Original:
    original = type(module).forward
    return lambda x: original(module, x)  # type: ignore[no-any-return]


def _norm(session: Session, path: str, module: nn.Module, capture: int | None) -> Callable[..., Any]:
    original = _bound(module)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if capture is not None:
            session.transcoder_input(capture, x)
        return session.norm(path, module, original, x)

    return forward


def _output_norm(session: Session, layer: int, path: str, module: nn.Module) -> Callable[..., Any]:
    original = _bound(module)

    def forward(h: torch.Tensor) -> torch.Tensor:
        return session.output_site(layer, lambda: session.norm(path, module, original, h))

    return forward


def _mlp(
    session: Session, layer: int, module: nn.Module, capture: bool, post_is_output: bool
) -> Callable[..., Any]:
    original = type(module).forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if capture:
            session.transcoder_input(layer, x)

        def live() -> torch.Tensor:
            return original(module, x, *args, **kwargs)  # type: ignore[no-any-return]

        return session.inner_mlp(layer, live) if post_is_output else session.output_site(layer, live)

    return forward


def _final(session: Session, module: nn.Module) -> Callable[..., Any]:
    original = _bound(module)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return session.final(lambda: session.norm("final", module, original, x))

    return forward
