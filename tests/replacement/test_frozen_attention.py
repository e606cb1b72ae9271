"""The frozen-pattern product used by replays: copies folded into columns, same numbers."""

from __future__ import annotations

import pytest
import torch

from tracewire.replacement.frozen_attention import FrozenPatternAV, pattern_times


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_pattern_times_matches_broadcast_matmul(batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    pattern = torch.rand(1, 4, 7, 5, generator=gen)
    x = torch.randn(batch, 4, 5, 6, generator=gen)
    expected = torch.matmul(pattern, x)  # broadcasts the pattern over the copies
    got = pattern_times(pattern, x)
    assert got.shape == (batch, 4, 7, 6)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_pattern_times_with_per_copy_patterns_is_plain_matmul() -> None:
    gen = torch.Generator().manual_seed(0)
    pattern, x = torch.rand(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 5, generator=gen)
    assert torch.equal(pattern_times(pattern, x), torch.matmul(pattern, x))


@pytest.mark.parametrize("whole", [True, False])
def test_frozen_pattern_gradient_per_copy(whole: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each copy's value gradient is Pᵀ times that copy's output gradient (P from one query batch),
    for the kept pattern and for the chunked recomputation."""
    if not whole:
        monkeypatch.setattr("tracewire.replacement.frozen_attention.KEEP_PATTERN_BYTES", 0)
    gen = torch.Generator().manual_seed(1)
    heads, kv_heads, length, dh, copies = 4, 2, 6, 3, 5
    q = torch.randn(1, heads, length, dh, generator=gen)
    k = torch.randn(1, kv_heads, length, dh, generator=gen)
    v = torch.randn(copies, kv_heads, length, dh, generator=gen, requires_grad=True)
    scaling = dh**-0.5
    out = FrozenPatternAV.apply(v, q, k, None, scaling, None, heads // kv_heads, None)
    upstream = torch.randn(out.shape, generator=gen)
    (grad_v,) = torch.autograd.grad(out, v, upstream)

    kr = k.repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ kr.transpose(-1, -2) * scaling
    scores = scores.masked_fill(torch.ones(length, length).triu(1).bool(), float("-inf"))
    pattern = scores.softmax(-1)  # [1, H, Q, K]
    vr = v.detach().repeat_interleave(heads // kv_heads, dim=1)
    torch.testing.assert_close(out, (pattern @ vr).transpose(1, 2), rtol=1e-5, atol=1e-5)
    g = upstream.transpose(1, 2)  # [B, H, Q, dh]
    expected = (pattern.transpose(-1, -2) @ g).view(copies, kv_heads, heads // kv_heads, length, dh).sum(2)
    torch.testing.assert_close(grad_v, expected, rtol=1e-5, atol=1e-5)
