"""Norms with frozen denominators.

A norm is ``y = w ⊙ x · s(x)`` (RMSNorm; Gemma writes ``(1 + w)``) or
``y = w ⊙ (x − mean x) · s(x) + b`` (LayerNorm, GPT-2), where ``s = 1/sqrt(mean(x²) + eps)`` or
``1/sqrt(var(x) + eps)``. Freezing ``s`` at its clean-run value leaves a map that is linear in
``x`` (LayerNorm's mean-centring is itself linear, so it stays in the gradient path).
"""

from __future__ import annotations

import torch
from torch import nn

from tracewire.errors import InvalidArgumentError
from tracewire.models.adapters import NormKind


def norm_scale(kind: NormKind, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The denominator ``s(x)`` as float32 ``[..., 1]`` (detached: it is a constant from now on)."""
    xf = x.detach().float()
    if kind == "layernorm":
        var = xf.var(dim=-1, keepdim=True, unbiased=False)
        return torch.rsqrt(var + eps)
    return torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def linear_norm(kind: NormKind, module: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The norm applied to ``x`` with the denominator fixed to ``scale``: linear (affine) in ``x``."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if kind == "rms":
        return weight * (x.float() * scale).to(x.dtype)
    if kind == "rms_offset":
        return ((x.float() * scale) * (1.0 + weight.float())).to(x.dtype)
    if kind == "layernorm":
        xf = x.float()
        centred = xf - xf.mean(dim=-1, keepdim=True)
        out = centred * scale * weight.float()
        bias = getattr(module, "bias", None)
        if bias is not None:
            out = out + bias.float()
        return out.to(x.dtype)
    raise InvalidArgumentError(f"unknown norm kind {kind!r}")
