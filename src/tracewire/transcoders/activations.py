"""Sparsifying non-linearities of transcoders: JumpReLU, ReLU and TopK.

Each is a tiny ``nn.Module`` mapping pre-activations ``h = W_enc x + b_enc`` (``[..., d_tc]``)
to feature activations of the same shape, so that an encoder is always ``act(linear(x))``
whatever the activation, and the name written to ``config.yaml`` travels with the module.

JumpReLU's step is not differentiable in its threshold; for training, gradients reach the
threshold through the straight-through estimator of Rajamanoharan et al. (2024, "Jumping Ahead"):
the Dirac delta of the step is replaced by a rectangle kernel of width ``bandwidth``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tracewire.errors import InvalidArgumentError

ACTIVATION_NAMES: tuple[str, ...] = ("jumprelu", "relu", "topk")


class _JumpReLUFunction(torch.autograd.Function):
    """``a = h·1[h>θ]`` with a rectangle-kernel straight-through gradient for ``θ``.

    d a/d h = 1[h>θ] (the gradient flows to pre-activations of active features only);
    d a/d θ ≈ -(θ/ε)·1[|h-θ| < ε/2], the pseudo-derivative of the jump at ``h = θ``.
    """

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return torch.where(pre > threshold, pre, torch.zeros((), dtype=pre.dtype, device=pre.device))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        pre, threshold = ctx.saved_tensors
        bandwidth: float = ctx.bandwidth
        grad_pre = grad_thr = None
        if ctx.needs_input_grad[0]:
            grad_pre = grad_out * (pre > threshold).to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            in_window = ((pre - threshold).abs() < bandwidth / 2).to(grad_out.dtype)
            grad_thr = (-(threshold / bandwidth) * in_window * grad_out).sum_to_size(threshold.shape)
        return grad_pre, grad_thr, None


class Activation(nn.Module):
    """Base of the activation modules: ``forward(pre) -> acts``, same shape, zeros where inactive."""

    name: ClassVar[str]

    def forward(self, pre: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class JumpReLU(Activation):
    """``a = h·1[h>θ]`` with a learnable per-feature threshold ``θ`` (``[d_tc]``).

    ``bandwidth`` is the width ε of the rectangle kernel used for the threshold's gradient;
    0.1 is the value used in the JumpReLU paper for inputs normalised to unit scale.
    """

    name: ClassVar[str] = "jumprelu"

    def __init__(self, threshold: Tensor, bandwidth: float = 0.1) -> None:
        super().__init__()
        if threshold.ndim != 1:
            raise InvalidArgumentError(
                f"JumpReLU threshold must be 1-D [d_tc], got shape {tuple(threshold.shape)}"
            )
        if bandwidth <= 0:
            raise InvalidArgumentError(f"JumpReLU bandwidth must be > 0, got {bandwidth}")
        self.threshold = nn.Parameter(threshold, requires_grad=threshold.requires_grad)
        self.bandwidth = float(bandwidth)

    def forward(self, pre: Tensor) -> Tensor:
        out: Tensor = _JumpReLUFunction.apply(pre, self.threshold, self.bandwidth)
        return out

    def extra_repr(self) -> str:
        return f"d_tc={self.threshold.shape[0]}, bandwidth={self.bandwidth}"


class ReLU(Activation):
    """``a = max(h, 0)``: the original transcoders' activation (no parameters)."""

    name: ClassVar[str] = "relu"

    def forward(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)


class TopK(Activation):
    """Keep the ``k`` largest pre-activations of each row (ReLU'd), zero elsewhere.

    The ReLU means a row may have fewer than ``k`` non-zeros when fewer than ``k`` pre-activations
    are positive; it keeps activations non-negative like the other two activations.
    """

    name: ClassVar[str] = "topk"

    def __init__(self, k: int) -> None:
        super().__init__()
        if int(k) <= 0:
            raise InvalidArgumentError(f"TopK k must be a positive integer, got {k}")
        self.k = int(k)

    def forward(self, pre: Tensor) -> Tensor:
        if self.k > pre.shape[-1]:
            raise InvalidArgumentError(f"TopK k={self.k} exceeds the number of features {pre.shape[-1]}")
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def extra_repr(self) -> str:
        return f"k={self.k}"


def make_activation(name: str, *, threshold: Tensor | None = None, k: int | None = None) -> Activation:
    """Build the activation module called ``name`` from its parameters (threshold or k)."""
    if name == "jumprelu":
        if threshold is None:
            raise InvalidArgumentError("activation 'jumprelu' needs a threshold tensor")
        return JumpReLU(threshold)
    if name == "relu":
        return ReLU()
    if name == "topk":
        if k is None:
            raise InvalidArgumentError("activation 'topk' needs k")
        return TopK(k)
    raise InvalidArgumentError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
