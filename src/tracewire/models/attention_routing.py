"""Swapping a model's attention function through ``transformers.AttentionInterface``.

tracewire changes what attention computes in two places — the frozen patterns of the local
replacement model (``tracewire.replacement.frozen_attention``) and the clean-pattern attention of
interventions (``tracewire.interventions.intervened_pass``). Both go through the wiring of
``tracewire.models.hooks``, which routes attention here the HF-native way, with no patched model
classes: one dispatch function is registered under a new implementation name, paired with the
*base* implementation's mask function (so the masks the model builds are unchanged); the model
is switched to it for the duration of a run and back afterwards, and every call is handed to
the active handler (a ``hooks.Session``) together with the base implementation's name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

AttentionFn = Callable[..., tuple[torch.Tensor, Any]]

_REGISTERED: set[str] = set()


def registered_name(prefix: str, fn: AttentionFn, base_impl: str) -> str:
    """Register (once) ``fn`` as ``{prefix}_{base_impl}`` with ``base_impl``'s mask format."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = f"{prefix}_{base_impl}"
    if name not in _REGISTERED:
        AttentionInterface.register(name, fn)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS.get(base_impl, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        AttentionMaskInterface.register(name, mask_fn)
        _REGISTERED.add(name)
    return name


def current_implementation(model: nn.Module) -> str:
    hf_model: Any = model
    return getattr(hf_model.config, "_attn_implementation", None) or "eager"


@dataclass(frozen=True)
class AttentionCall:
    """One call of a model's attention function, as Hugging Face makes it.

    ``query``: ``[B, H, Q, dh]``; ``key``/``value``: ``[B, Hkv, K, dh]``; ``impl``: the model's own
    implementation (sdpa, eager, ...); ``kwargs``: the rest (``scaling``, ``dropout``, ``softcap``...).
    """

    module: nn.Module
    impl: str
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attention_mask: torch.Tensor | None
    kwargs: dict[str, Any]

    @property
    def layer(self) -> int:
        return int(getattr(self.module, "layer_idx", -1))

    def own(
        self, query: torch.Tensor | None = None, key: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """The model's own attention on this call, optionally with other queries and keys."""
        fn = base_function(self.module, self.impl)
        q = self.query if query is None else query
        k = self.key if key is None else key
        return fn(self.module, q, k, self.value, self.attention_mask, **self.kwargs)


class AttentionHandler(Protocol):
    """What the registered function hands every attention call to (``hooks.Session.attention``)."""

    def attention(self, call: AttentionCall) -> tuple[torch.Tensor, Any]: ...


_ACTIVE: ContextVar[tuple[AttentionHandler, str] | None] = ContextVar("tracewire_attention", default=None)


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
        raise RuntimeError("tracewire's attention function was called outside a tracewire forward")
    handler, impl = active
    return handler.attention(AttentionCall(module, impl, query, key, value, attention_mask, kwargs))


@contextmanager
def routed_attention(model: nn.Module, handler: AttentionHandler) -> Iterator[None]:
    """Route every attention call of ``model`` to ``handler`` until the context exits."""
    hf_model: Any = model
    base_impl = current_implementation(model)
    token = _ACTIVE.set((handler, base_impl))
    hf_model.set_attn_implementation(registered_name("tracewire", _dispatch, base_impl))
    try:
        yield
    finally:
        hf_model.set_attn_implementation(base_impl)
        _ACTIVE.reset(token)


def registry_function(impl: str) -> AttentionFn | None:
    """HF's registered function for ``impl`` (sdpa, flash, flex ...); ``None`` for eager."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if impl == "eager" or impl not in ALL_ATTENTION_FUNCTIONS:
        return None
    return ALL_ATTENTION_FUNCTIONS[impl]  # type: ignore[no-any-return]


def base_function(module: nn.Module, impl: str) -> AttentionFn:
    """The attention function ``module`` would call under implementation ``impl``.

    Eager attention is not in HF's registry: every modeling file defines its own
    ``eager_attention_forward`` (Gemma-2's has the softcap), so it is looked up in the module's
    own modeling file.
    """
    registered = registry_function(impl)
    if registered is not None:
        return registered
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(
            f"{type(module).__name__} has no eager_attention_forward in {type(module).__module__}; "
            "load the model with attn_implementation='sdpa'"
        )
    return eager  # type: ignore[no-any-return]
