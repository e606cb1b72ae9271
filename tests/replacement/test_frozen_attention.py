"""The frozen-pattern product used by replays: copies folded into columns, same numbers."""

from __future__ import annotations

import pytest
import torch

from tracewire.replacement.frozen_attention import FrozenPatternAV, PatternSource, pattern_times


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


@pytest.mark.parametrize(("whole", "kept_rows"), [(True, 1), (True, 4), (True, 128), (False, 128)])
def test_frozen_pattern_gradient_per_copy(
    whole: bool, kept_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each copy's value gradient is Pᵀ times that copy's output gradient (P from one query batch),
    for the kept pattern (its causal backward one query row, a few rows or all rows at a time)
    and for the tiled recomputation."""
    monkeypatch.setattr("tracewire.replacement.frozen_attention.KEPT_BACKWARD_ROWS", kept_rows)
    if not whole:
        monkeypatch.setattr("tracewire.replacement.frozen_attention.KEEP_PATTERN_BYTES", 0)
    gen = torch.Generator().manual_seed(1)
    heads, kv_heads, length, dh, copies = 4, 2, 6, 3, 5
    q = torch.randn(1, heads, length, dh, generator=gen)
    k = torch.randn(1, kv_heads, length, dh, generator=gen)
    v = torch.randn(copies, kv_heads, length, dh, generator=gen, requires_grad=True)
    scaling = dh**-0.5
    out = FrozenPatternAV.apply(v, PatternSource(q, k, None, scaling, None, heads // kv_heads), None)
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


def _independent_attention(q, k, v, mask, scaling, softcap, n_rep):  # type: ignore[no-untyped-def]
    """Eager attention written out in full, as the reference for the tiled computation."""
    kr = k.repeat_interleave(n_rep, dim=1)
    scores = q @ kr.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, k_len = q.shape[2], k.shape[2]
    causal = torch.ones(q_len, k_len).triu(k_len - q_len + 1).bool()
    scores = scores.masked_fill(causal, float("-inf")) if mask is None else scores + mask
    pattern = scores.softmax(-1).nan_to_num(0.0)
    return (pattern @ v.repeat_interleave(n_rep, dim=1)).transpose(1, 2)


@pytest.mark.parametrize("tile_bytes", [1, 40, 2**20])
@pytest.mark.parametrize(
    ("n_rep", "copies", "masked", "softcap"),
    [(1, 1, False, None), (2, 3, False, None), (3, 2, False, 5.0), (2, 3, True, None), (1, 2, True, 2.0)],
)
def test_tiled_pattern_matches_eager_attention(
    tile_bytes: int,
    n_rep: int,
    copies: int,
    masked: bool,
    softcap: float | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forward value and value gradient of the tiled recomputation (tiles of one row up to the
    whole prompt) against eager attention differentiated by autograd: causal or an explicit mask
    that hides a whole row (padding), grouped heads, softcapping, several copies."""
    monkeypatch.setattr("tracewire.replacement.frozen_attention.KEEP_PATTERN_BYTES", 0)
    monkeypatch.setattr("tracewire.replacement.frozen_attention.TILE_BYTES", tile_bytes)
    gen = torch.Generator().manual_seed(n_rep * 10 + copies)
    kv_heads, length, dh = 2, 9, 4
    heads = kv_heads * n_rep
    q = torch.randn(1, heads, length, dh, generator=gen)
    k = torch.randn(1, kv_heads, length, dh, generator=gen)
    v = torch.randn(copies, kv_heads, length, dh, generator=gen, requires_grad=True)
    mask = None
    if masked:  # causal, plus padding: key 0 hidden from everyone, query 2 sees nothing at all
        allowed = torch.ones(length, length).tril().bool()
        allowed[:, 0] = False
        allowed[2] = False
        mask = torch.zeros(1, 1, length, length).masked_fill(~allowed, float("-inf"))
    scaling = dh**-0.5
    out = FrozenPatternAV.apply(v, PatternSource(q, k, mask, scaling, softcap, n_rep), None)
    upstream = torch.randn(out.shape, generator=gen)
    (grad_v,) = torch.autograd.grad(out, v, upstream)

    v_ref = v.detach().clone().requires_grad_(True)
    expected = _independent_attention(q, k, v_ref, mask, scaling, softcap, n_rep)
    (expected_grad,) = torch.autograd.grad(expected, v_ref, upstream)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_v, expected_grad, rtol=1e-5, atol=1e-5)
    if masked:
        assert torch.all(out[:, 2] == 0) and torch.isfinite(grad_v).all()
