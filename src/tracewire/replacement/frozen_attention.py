"""Frozen attention patterns: what the replacement model's attention calls compute.

In the local replacement model the attention *pattern* is a constant taken from the clean run;
only the value/output path carries gradient. Rather than patching model classes, the model-access
layer (``tracewire.models.hooks``) routes attention calls through a function registered with
``transformers.AttentionInterface``; a frozen pass hands each call to :func:`frozen_attention`.

The function never materialises a ``[heads, P, P]`` pattern for the whole prompt: the forward
value is either the model's own implementation (record mode: bit-identical to the original) or
a query-chunked ``softmax(q kᵀ) v`` (replay mode), and the backward recomputes the pattern chunk
by chunk from the cached queries and keys to form ``∂v = Pᵀ ∂out``. Memory stays
``O(P · d)`` per layer, which is what lets long prompts fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from tracewire.models.attention_routing import AttentionCall, registry_function
from tracewire.replacement.state import FrozenRun

#: Bytes of float32 pattern one chunk may hold; bounds the backward's transient memory.
CHUNK_BYTES = 64 * 2**20
#: A layer's whole pattern up to this size is kept for backward (retained replays run many
#: backward passes; recomputing softmax(q kᵀ) each time would dominate short prompts).
KEEP_PATTERN_BYTES = 16 * 2**20


def _additive_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Any HF mask format as float32 additive; ``None`` stays ``None`` (= causal, built per chunk).

    A plain causal mask is never materialised for the whole prompt: at 4,096 tokens it would be
    64 MiB per layer, kept alive by every layer's backward.
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.float()


def _mask_chunk(
    mask: torch.Tensor | None, start: int, end: int, k_end: int, offset: int, device: torch.device
) -> torch.Tensor:
    if mask is not None:
        return mask[..., start:end, :k_end]
    q_pos = torch.arange(start, end, device=device)[:, None] + offset
    k_pos = torch.arange(k_end, device=device)[None, :]
    return torch.zeros(end - start, k_end, device=device).masked_fill(k_pos > q_pos, float("-inf"))


def _pattern_chunks(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
    n_rep: int,
    *,
    whole: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, end, P[:, :, start:end, :])`` float32 pattern chunks over query positions.

    ``q``: ``[Bq, H, Q, dh]``; ``k``: ``[Bk, Hkv, K, dh]`` (grouped heads are repeated here).
    """
    heads, q_len, k_len = q.shape[1], q.shape[2], k.shape[2]
    kf = k.float().repeat_interleave(n_rep, dim=1) if n_rep > 1 else k.float()
    rows = q_len if whole else max(1, CHUNK_BYTES // max(1, 4 * heads * k_len * max(q.shape[0], 1)))
    if not whole and q_len >= 256:
        rows = min(rows, -(-q_len // 8))  # ≥ 8 chunks: each only reads keys up to its last query
    offset = k_len - q_len
    for start in range(0, q_len, rows):
        end = min(q_len, start + rows)
        k_end = k_len if whole else min(k_len, end + offset)  # causal: later keys are masked anyway
        scores = torch.matmul(q[:, :, start:end].float(), kf[:, :, :k_end].transpose(-1, -2)) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores + _mask_chunk(mask, start, end, k_end, offset, q.device)
        pattern = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        yield start, end, pattern


def pattern_times(pattern: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``pattern @ x`` for a pattern ``[1 or B, H, M, N]`` and ``x [B, H, N, dh]`` → ``[B, H, M, dh]``.

    A replay runs ``B`` copies of the prompt through one pattern (batch 1). ``torch.matmul``
    broadcasts that by copying the pattern ``B`` times and doing ``B·H`` thin products (``dh``
    columns each); here the copies are folded into the columns instead — one ``[M, N] @ [N, B·dh]``
    product per head — so the pattern is read once and the product is a wide GEMM. Each output
    entry is the same dot product as before (at 512 positions, 9 heads, B = 64 the results were
    bit-identical and the product 3× faster).
    """
    batch = x.shape[0]
    if pattern.shape[0] != 1 or batch == 1:
        return torch.matmul(pattern, x)
    heads, n, dh = x.shape[1], x.shape[2], x.shape[3]
    folded = x.permute(1, 2, 0, 3).reshape(heads, n, batch * dh)
    out = torch.matmul(pattern[0], folded)  # [H, M, B·dh]
    return out.view(heads, -1, batch, dh).permute(2, 0, 1, 3)


class FrozenPatternAV(torch.autograd.Function):
    """``out = P v`` with ``P`` a constant recomputed from cached ``q, k``; gradient only to ``v``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        value: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor,
        mask: torch.Tensor | None,
        scaling: float,
        softcap: float | None,
        n_rep: int,
        precomputed: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.mask = mask  # shared by every layer of the run (memoised), so not a per-layer copy
        ctx.scaling, ctx.softcap, ctx.n_rep = scaling, softcap, n_rep
        ctx.value_shape, ctx.value_dtype = value.shape, value.dtype
        heads, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
        keep = query.shape[0] * heads * q_len * k_len * 4 <= KEEP_PATTERN_BYTES
        if keep:
            pattern = next(_pattern_chunks(query, key, mask, scaling, softcap, n_rep, whole=True))[2]
            ctx.save_for_backward(pattern)
        else:
            ctx.save_for_backward(query, key)
        ctx.kept = keep
        if precomputed is not None:
            return precomputed
        batch = max(value.shape[0], query.shape[0])
        v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
        if keep:
            return pattern_times(pattern.to(v.dtype), v).transpose(1, 2)
        out = value.new_zeros(batch, q_len, heads, value.shape[-1])
        for start, end, chunk in _pattern_chunks(query, key, mask, scaling, softcap, n_rep):
            k_end = chunk.shape[-1]
            out[:, start:end] = pattern_times(chunk.to(v.dtype), v[:, :, :k_end]).transpose(1, 2)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        mask = ctx.mask
        n_rep = ctx.n_rep
        b, kv_heads, k_len, dh = ctx.value_shape
        batch = max(grad_out.shape[0], b)
        g = grad_out.transpose(1, 2).float()  # [B, H, Q, dh]
        if ctx.kept:
            (pattern,) = ctx.saved_tensors
            grad_v = pattern_times(pattern.transpose(-1, -2), g)
        else:
            query, key = ctx.saved_tensors
            grad_v = torch.zeros(
                batch, kv_heads * n_rep, k_len, dh, dtype=torch.float32, device=grad_out.device
            )
            for start, end, chunk in _pattern_chunks(query, key, mask, ctx.scaling, ctx.softcap, n_rep):
                k_end = chunk.shape[-1]
                grad_v[:, :, :k_end] += pattern_times(chunk.transpose(-1, -2), g[:, :, start:end])
        if n_rep > 1:
            grad_v = grad_v.view(batch, kv_heads, n_rep, k_len, dh).sum(2)
        if b == 1 and batch > 1:
            grad_v = grad_v.sum(0, keepdim=True)
        return grad_v.to(ctx.value_dtype), None, None, None, None, None, None, None


def frozen_attention(run: FrozenRun, call: AttentionCall) -> tuple[torch.Tensor, None]:
    """One attention call of ``run`` (what a frozen pass's ``Session.attention`` returns).

    Record mode stores the queries and keys; its forward value is the model's own implementation
    (bit-identical to the original), or for eager attention tracewire's chunked computation, which
    *is* eager attention (in float32) and never materialises the full pattern. Replay mode reads
    the stored queries and keys of the first ``P`` positions.
    """
    module, query, key, attention_mask = call.module, call.query, call.key, call.attention_mask
    layer = call.layer
    rest = dict(call.kwargs)
    rest.pop("dropout", None)
    scaling, softcap = rest.pop("scaling", None), rest.pop("softcap", None)
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    n_rep = int(getattr(module, "num_key_value_groups", 1) or 1)
    precomputed = None
    if run.mode == "record":
        base = registry_function(call.impl)
        if base is not None:
            with torch.no_grad():
                precomputed, _ = base(
                    module,
                    query,
                    key,
                    call.value,
                    attention_mask,
                    dropout=0.0,
                    scaling=scaling,
                    softcap=softcap,
                    **rest,
                )
        q, k = query.detach(), key.detach()
        run.state.record_qk(layer, q, k)
    else:
        q, k = run.state.replay_qk(layer, query.shape[2])
    mask = run.mask_cache.get(id(attention_mask)) if attention_mask is not None else None
    if attention_mask is not None and mask is None:
        mask = _additive_mask(attention_mask)
        run.mask_cache[id(attention_mask)] = mask
        run.mask_refs.append(attention_mask)  # keep the key object alive so its id stays unique
    out = FrozenPatternAV.apply(call.value, q, k, mask, scale, softcap, n_rep, precomputed)
    return out, None
