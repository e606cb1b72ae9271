"""Frozen attention for interventions: the model's own attention function, fed the clean q and k.

An attention output is ``softmax(q kᵀ) v``. Calling the model's *own* attention implementation
(sdpa, eager, ...) with the clean run's queries and keys and the current values therefore
applies the clean attention pattern to whatever the intervention did to the values — and when
nothing changed, every input is the clean one, so the output is bit-identical to the clean run.
That is what lets "set a feature to its current value" leave the logits exactly unchanged.

As in ``tracewire.replacement.frozen_attention`` the swap happens through
``transformers.AttentionInterface``: a registered function (paired with the base
implementation's mask function, so masks are unchanged) that asks the active
:class:`AttentionHandler` what to do at each call. Generation works unchanged: KV-cache updates
happen before the attention function is called, and decode steps pass through to the base
function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch
from torch import nn

AttentionFn = Callable[..., tuple[torch.Tensor, Any]]


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
_REGISTERED: set[str] = set()


def base_function(module: nn.Module, impl: str) -> AttentionFn:
    """The attention function ``module`` would call under implementation ``impl``.

    Eager attention is not in HF's registry: every modeling file defines its own
    ``eager_attention_forward`` (Gemma-2's has the softcap), so it is looked up in the module's
    own modeling file.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if impl != "eager" and impl in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[impl]  # type: ignore[no-any-return]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(
            f"{type(module).__name__} has no eager_attention_forward in {type(module).__module__}; "
            "load the model with attn_implementation='sdpa' to run interventions"
        )
    return eager  # type: ignore[no-any-return]


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


def _registered_name(base_impl: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = f"tracewire_intervene_{base_impl}"
    if name not in _REGISTERED:
        AttentionInterface.register(name, _dispatch)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS.get(base_impl, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        AttentionMaskInterface.register(name, mask_fn)
        _REGISTERED.add(name)
    return name


@contextmanager
def routed_attention(model: nn.Module, handler: AttentionHandler) -> Iterator[None]:
    """Route every attention call of ``model`` through ``handler`` until the context exits."""
    hf_model: Any = model
    base_impl = getattr(hf_model.config, "_attn_implementation", None) or "eager"
    name = _registered_name(base_impl)
    token = _ACTIVE.set((handler, base_impl))
    hf_model.set_attn_implementation(name)
    try:
        yield
    finally:
        hf_model.set_attn_implementation(base_impl)
        _ACTIVE.reset(token)
