"""One model forward that yields the transcoder input of every needed layer, and stops there.

Hooks sit on the adapter's site modules of the needed layers only. The hook of the deepest needed
layer raises once it has its tensor, so the layers above it, the final norm and the unembedding
(for SmolLM2 the largest single matmul) never run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from tracewire.models.loading import LoadedModel


class _Stop(Exception):
    """Raised in the deepest needed hook: nothing above it is needed."""


@torch.no_grad()
def layer_inputs(loaded: LoadedModel, ids: Tensor, site: str, layers: Sequence[int]) -> dict[int, Tensor]:
    """Transcoder inputs ``{layer: [batch, seq, d_model]}`` at ``site`` for token ids ``ids [batch, seq]``."""
    wanted = sorted(set(layers))
    if not wanted:
        return {}
    last = wanted[-1]
    captured: dict[int, Tensor] = {}
    handles = []
    for layer in wanted:
        module, side = loaded.adapter.site_module(loaded.model, layer, site)

        def keep(value: Tensor, layer: int = layer) -> None:
            captured[layer] = value.detach()
            if layer == last:
                raise _Stop

        if side == "input":

            def pre_hook(_module, args, kwargs, keep=keep):  # type: ignore[no-untyped-def]
                keep(args[0] if args else next(iter(kwargs.values())))

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def hook(_module, _args, output, keep=keep):  # type: ignore[no-untyped-def]
                keep(output[0] if isinstance(output, tuple) else output)

            handles.append(module.register_forward_hook(hook))
    try:
        with contextlib.suppress(_Stop):
            loaded.model(ids.to(loaded.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer for layer in wanted if layer not in captured]
    if missing:
        raise RuntimeError(f"site {site!r} of layers {missing} was not reached by the model's forward")
    return captured
