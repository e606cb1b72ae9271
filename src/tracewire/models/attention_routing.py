"""Swapping a model's attention function through ``transformers.AttentionInterface``.

tracewire changes what attention computes in two places — the frozen patterns of the local
replacement model (``tracewire.replacement.frozen_attention``) and the clean-pattern attention of
interventions (``tracewire.interventions.attention``). Both do it the HF-native way, with no
patched model classes: register a function under a new implementation name, paired with the
*base* implementation's mask function (so the masks the model builds are unchanged), switch the
model to it for the duration of a run, and switch back. This module is that mechanism, once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def routed_implementation(model: nn.Module, prefix: str, fn: AttentionFn) -> Iterator[str]:
    """Run ``model`` with ``fn`` as its attention function; yields the base implementation name."""
    hf_model: Any = model
    base_impl = current_implementation(model)
    hf_model.set_attn_implementation(registered_name(prefix, fn, base_impl))
    try:
        yield base_impl
    finally:
        hf_model.set_attn_implementation(base_impl)


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
