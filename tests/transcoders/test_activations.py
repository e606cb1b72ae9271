"""JumpReLU / ReLU / TopK semantics and JumpReLU's straight-through threshold gradient."""

from __future__ import annotations

import pytest
import torch

from tracewire.transcoders.activations import JumpReLU, ReLU, TopK, make_activation


def test_jumprelu_keeps_strictly_above_threshold() -> None:
    threshold = torch.tensor([0.5, 0.5, 0.5, -0.2])
    pre = torch.tensor([[0.5, 0.50001, 0.4, -0.1]])
    acts = JumpReLU(threshold)(pre)
    # h == θ is inactive (strict >); above θ keeps h itself (not h - θ); a negative θ lets negatives through
    assert acts[0].tolist() == pytest.approx([0.0, 0.50001, 0.0, -0.1])


def test_relu() -> None:
    pre = torch.tensor([-1.0, 0.0, 2.0])
    assert ReLU()(pre).tolist() == [0.0, 0.0, 2.0]


def test_topk_keeps_exactly_k_largest() -> None:
    generator = torch.Generator().manual_seed(0)
    pre = torch.rand(4, 7, 16, generator=generator) + 0.1  # all positive: exactly k survive
    acts = TopK(5)(pre)
    assert ((acts != 0).sum(-1) == 5).all()
    kept = torch.where(acts != 0, pre, torch.full_like(pre, float("inf")))
    dropped = torch.where(acts == 0, pre, torch.full_like(pre, -float("inf")))
    assert (kept.min(-1).values > dropped.max(-1).values).all()
    assert torch.equal(acts[acts != 0], pre[acts != 0])


def test_topk_relus_negative_winners() -> None:
    pre = torch.tensor([[3.0, -1.0, -2.0, -3.0]])
    assert TopK(2)(pre).tolist() == [[3.0, 0.0, 0.0, 0.0]]


def test_topk_k_larger_than_width_is_an_error() -> None:
    with pytest.raises(ValueError, match="k=5"):
        TopK(5)(torch.zeros(3))


def test_jumprelu_ste_threshold_gradient() -> None:
    bandwidth = 0.1
    module = JumpReLU(torch.tensor([1.0, 1.0, 1.0], requires_grad=True), bandwidth=bandwidth)
    # |h-θ| < ε/2 for the first two features, outside the window for the third
    pre = torch.tensor([[1.02, 0.97, 1.5]], requires_grad=True)
    module(pre).sum().backward()
    grad = module.threshold.grad
    assert grad is not None
    assert grad[0] != 0 and grad[1] != 0 and grad[2] == 0
    # pseudo-derivative -(θ/ε)·K((h-θ)/ε) with a rectangle kernel
    assert grad.tolist() == pytest.approx([-1.0 / bandwidth, -1.0 / bandwidth, 0.0])
    # gradient reaches h only where the feature is active
    assert pre.grad is not None
    assert pre.grad.tolist() == [[1.0, 0.0, 1.0]]


def test_jumprelu_ste_sums_over_batch_dims() -> None:
    module = JumpReLU(torch.full((4,), 0.5, requires_grad=True))
    pre = torch.full((2, 3, 4), 0.52)
    module(pre).sum().backward()
    assert module.threshold.grad is not None
    assert module.threshold.grad.shape == (4,)
    assert module.threshold.grad.tolist() == pytest.approx([-0.5 / 0.1 * 6] * 4)


def test_make_activation_by_name() -> None:
    assert make_activation("relu").name == "relu"
    assert make_activation("topk", k=2).name == "topk"
    assert make_activation("jumprelu", threshold=torch.zeros(3)).name == "jumprelu"
    with pytest.raises(ValueError, match="gelu"):
        make_activation("gelu")
    with pytest.raises(ValueError, match="threshold"):
        make_activation("jumprelu")
