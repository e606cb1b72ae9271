"""Frozen attention for interventions: the model's own attention function, fed the clean q and k.

An attention output is ``softmax(q kᵀ) v``. Calling the model's *own* attention implementation
(sdpa, eager, ...) with the clean run's queries and keys and the current values therefore
applies the clean attention pattern to whatever the intervention did to the values — and when
nothing changed, every input is the clean one, so the output is bit-identical to the clean run.
That is what lets "set a feature to its current value" leave the logits exactly unchanged.

As in ``tracewire.replacement.frozen_attention`` the swap goes through
``tracewire.models.attention_routing`` (a function registered with
``transformers.AttentionInterface``, paired with the base implementation's mask function); here
it asks the active :class:`AttentionHandler` what to do at each call. Generation works
unchanged: KV-cache updates happen before the attention function is called, and decode steps
pass through to the base function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch
from torch import nn

from tracewire.models.attention_routing import (
    AttentionFn,
    base_function,
    current_implementation,
    routed_implementation,
)


class AttentionHandler(Protocol):
    """What the registered function delegates to while a hooked forward is active."""

    def attention(
        self,
        module: nn.Module,
        base: AttentionFn,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, Any]: ...


_ACTIVE: ContextVar[tuple[AttentionHandler, str] | None] = ContextVar(
    "tracewire_intervention_attention", default=None
)


def _dispatch(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    active = _ACTIVE.get()
    if active is None:
        raise RuntimeError("tracewire's intervention attention was called outside an intervention run")
    handler, impl = active
    return handler.attention(module, base_function(module, impl), query, key, value, attention_mask, kwargs)


@contextmanager
def routed_attention(model: nn.Module, handler: AttentionHandler) -> Iterator[None]:
    """Route every attention call of ``model`` through ``handler`` until the context exits."""
    token = _ACTIVE.set((handler, current_implementation(model)))
    try:
        with routed_implementation(model, "tracewire_intervene", _dispatch):
            yield
    finally:
        _ACTIVE.reset(token)
