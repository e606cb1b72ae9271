"""Frozen attention patterns: what the replacement model's attention calls compute.

In the local replacement model the attention *pattern* is a constant taken from the clean run;
only the value/output path carries gradient. Rather than patching model classes, the model-access
layer (``tracewire.models.hooks``) routes attention calls through a function registered with
``transformers.AttentionInterface``; a frozen pass hands each call to :func:`frozen_attention`.

The function never materialises a ``[heads, P, P]`` pattern for the whole prompt: the forward
value is either the model's own implementation (record mode: bit-identical to the original) or
a tiled ``softmax(q kᵀ) v`` (replay mode), and the backward recomputes the pattern tile by tile
(one head, a run of query rows) from the cached queries and keys to form ``∂v = Pᵀ ∂out``. Memory stays
``O(P · d)`` per layer, which is what lets long prompts fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tracewire.models.attention_routing import AttentionCall, registry_function
from tracewire.replacement.state import FrozenRun

#: Bytes of float32 pattern one tile (one head, a run of query rows) may hold. Small enough to stay
#: in cache between the score product, the mask, the softmax and the product with the values:
#: at 4,096 positions (9 heads) 4 MiB tiles ran the backward 3.5× faster than 64 MiB chunks over
#: all heads, whose elementwise passes each went out to memory.
TILE_BYTES = 4 * 2**20
#: A layer's whole pattern up to this size is kept for backward (retained replays run many
#: backward passes; recomputing softmax(q kᵀ) each time would dominate short prompts).
KEEP_PATTERN_BYTES = 16 * 2**20


def keeps_pattern(heads: int, q_len: int, k_len: int, copies: int = 1) -> bool:
    """Whether a layer's ``copies × heads × q_len × k_len`` float32 pattern is kept for backward
    (else each pass recomputes it tile by tile): the one rule the replays and the estimator use."""
    return copies * heads * q_len * k_len * 4 <= KEEP_PATTERN_BYTES


#: Query rows per product in the kept pattern's backward (see ``_kept_backward``).
KEPT_BACKWARD_ROWS = 128


def _additive_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Any HF mask format as float32 additive; ``None`` stays ``None`` (= causal, applied per tile).

    A plain causal mask is never materialised for the whole prompt: at 4,096 tokens it would be
    64 MiB per layer, kept alive by every layer's backward.
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.float()


def _to_pattern(
    scores: torch.Tensor,
    mask: torch.Tensor | None,
    softcap: float | None,
    diagonal: int,
    causal: torch.Tensor,
) -> torch.Tensor:
    """Softmax of scaled scores ``[..., rows, keys]`` (in place where it can).

    ``mask``: the additive mask of exactly these rows and keys, or ``None`` for plain causal
    attention, applied only to the square block of keys from ``diagonal`` on, where the rows' own
    positions are (``causal``: True above the diagonal). Every row then keeps its diagonal, so no
    row is all ``-inf`` and no NaN can appear; an explicit mask may hide whole rows (padding),
    whose NaNs become zeros.
    """
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None:
        rows = scores.shape[-2]
        scores[..., diagonal : diagonal + rows].masked_fill_(causal[:rows, :rows], float("-inf"))
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores + mask, dim=-1).nan_to_num_(0.0)


def _causal_block(rows: int, device: torch.device) -> torch.Tensor:
    return torch.ones(rows, rows, dtype=torch.bool, device=device).triu_(1)


@dataclass(frozen=True)
class PatternSource:
    """What one layer's frozen pattern is recomputed from.

    ``query``: ``[Bq, H, Q, dh]``; ``key``: ``[Bk, Hkv, K, dh]`` (query head ``h`` reads key
    head ``h // n_rep``); ``mask``: additive float32 or ``None`` (causal).
    """

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    softcap: float | None
    n_rep: int

    @property
    def shared(self) -> bool:
        """One pattern for every copy of a replay (batch-1 queries and mask)."""
        return self.query.shape[0] == 1 and (self.mask is None or self.mask.shape[0] == 1)

    def whole(self) -> torch.Tensor:
        """The float32 pattern ``[Bq, H, Q, K]`` of every head (short prompts: kept for backward)."""
        q, k, n_rep = self.query, self.key, self.n_rep
        q_len, k_len = q.shape[2], k.shape[2]
        kf = k.float().repeat_interleave(n_rep, dim=1) if n_rep > 1 else k.float()
        scores = torch.matmul(q.float() * self.scaling, kf.transpose(-1, -2))
        mask_all = self.mask[..., :q_len, :k_len] if self.mask is not None else None
        return _to_pattern(scores, mask_all, self.softcap, k_len - q_len, _causal_block(q_len, q.device))

    def tiles(self) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """Yield ``(head, start, end, P[:, head, start:end, :k_end])`` float32 pattern tiles.

        A tile stops at the key of its last query (later keys are masked anyway) and holds at
        most :data:`TILE_BYTES`; ``q`` is scaled once per call, not per tile.
        """
        q, k, mask, n_rep = self.query, self.key, self.mask, self.n_rep
        batch, heads, q_len, k_len = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        offset = k_len - q_len
        rows = max(1, min(q_len, TILE_BYTES // max(1, 4 * batch * k_len)))
        q_scaled = q.float() * self.scaling
        kf = k.float()
        causal = _causal_block(rows, q.device)
        for start in range(0, q_len, rows):
            end = min(q_len, start + rows)
            k_end = min(k_len, end + offset)  # causal: later keys are masked anyway
            for head in range(heads):
                scores = torch.matmul(
                    q_scaled[:, head, start:end], kf[:, head // n_rep, :k_end].transpose(-1, -2)
                )
                tile_mask = None if mask is None else mask[:, min(head, mask.shape[1] - 1), start:end, :k_end]
                yield head, start, end, _to_pattern(scores, tile_mask, self.softcap, start + offset, causal)


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


def _fold(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, dh]`` → ``[H, N, B·dh]``: the copies side by side as columns."""
    batch, heads, n, dh = x.shape
    return x.permute(1, 2, 0, 3).reshape(heads, n, batch * dh)


def _kept_backward(pattern: torch.Tensor, grad_out: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``Σ_r P_rᵀ g_r`` → ``[B, Hkv, K, dh]`` float32 for a kept pattern ``[1, H, Q, K]`` shared by
    all copies and the output gradient ``grad_out [B, Q, H, dh]`` as attention returned it.

    One copy lays ``grad_out`` out as ``[Hkv, n_rep, Q, B·dh]`` (copies folded into columns, the
    query heads of a key head side by side), so the sum over a key head's query heads is the
    accumulation of the products themselves, not a reshape, copy and ``sum`` afterwards (at 16
    positions, 64 copies, 3 query heads per key head: 1.1 → 0.5 ms per layer). Query rows are
    taken :data:`KEPT_BACKWARD_ROWS` at a time, each against the keys up to its last query only:
    the pattern is causal, so the full product spends half its work on zeros (at 512 positions,
    9 heads, 8 copies: 17.8 → 11.7 ms per layer).
    """
    batch, q_len, heads, dh = grad_out.shape
    k_len = pattern.shape[-1]
    kv_heads, columns = heads // n_rep, batch * dh
    g = grad_out.new_empty((heads, q_len, batch, dh), dtype=torch.float32)
    g.copy_(grad_out.permute(2, 1, 0, 3))
    g_cols = g.view(kv_heads, n_rep, q_len, columns)
    by_key_head = pattern[0].view(kv_heads, n_rep, q_len, k_len)
    out = g.new_zeros(kv_heads, k_len, columns)
    if q_len <= KEPT_BACKWARD_ROWS:  # one product: the query heads stacked along the inner dimension
        stacked = by_key_head.reshape(kv_heads, n_rep * q_len, k_len).transpose(1, 2)
        torch.bmm(stacked, g_cols.reshape(kv_heads, n_rep * q_len, columns), out=out)
    else:
        offset = k_len - q_len
        for start in range(0, q_len, KEPT_BACKWARD_ROWS):
            end = min(q_len, start + KEPT_BACKWARD_ROWS)
            k_end = min(k_len, end + offset)
            for rep in range(n_rep):
                out[:, :k_end].baddbmm_(
                    by_key_head[:, rep, start:end, :k_end].transpose(1, 2), g_cols[:, rep, start:end]
                )
    return out.view(kv_heads, k_len, batch, dh).permute(2, 0, 1, 3)


def _tiled_forward(value: torch.Tensor, source: PatternSource) -> torch.Tensor:
    """``P v`` → ``[B, Q, H, dh]`` tile by tile; one pattern for all copies is applied to them
    folded into columns (as in :func:`pattern_times`)."""
    heads, q_len, dh = source.query.shape[1], source.query.shape[2], value.shape[-1]
    n_rep = source.n_rep
    if source.shared:
        v_cols = _fold(value)  # [Hkv, K, B·dh]
        out_cols = value.new_empty(heads, q_len, value.shape[0] * dh)
        for head, start, end, tile in source.tiles():
            k_end = tile.shape[-1]
            torch.mm(tile[0].to(value.dtype), v_cols[head // n_rep, :k_end], out=out_cols[head, start:end])
        return out_cols.view(heads, q_len, -1, dh).permute(2, 1, 0, 3).contiguous()
    out = value.new_zeros(max(value.shape[0], source.query.shape[0]), q_len, heads, dh)
    for head, start, end, tile in source.tiles():
        k_end = tile.shape[-1]
        out[:, start:end, head] = torch.matmul(tile.to(value.dtype), value[:, head // n_rep, :k_end])
    return out


def _tiled_backward(g: torch.Tensor, source: PatternSource, k_len: int) -> torch.Tensor:
    """``Pᵀ g`` summed over each key head's query heads → ``[B, Hkv, K, dh]`` float32, for
    ``g [B, H, Q, dh]``, tile by tile (accumulated in place; one pattern for all copies
    multiplies them folded into columns)."""
    batch, heads, _, dh = g.shape
    n_rep = source.n_rep
    kv_heads = heads // n_rep
    if source.shared:
        g_cols = _fold(g)  # [H, Q, B·dh]
        grad_cols = g.new_zeros(kv_heads, k_len, batch * dh)
        for head, start, end, tile in source.tiles():
            k_end = tile.shape[-1]
            grad_cols[head // n_rep, :k_end].addmm_(tile[0].transpose(0, 1), g_cols[head, start:end])
        return grad_cols.view(kv_heads, k_len, batch, dh).permute(2, 0, 1, 3)
    grad_v = g.new_zeros(max(batch, source.query.shape[0]), kv_heads, k_len, dh)
    for head, start, end, tile in source.tiles():
        k_end = tile.shape[-1]
        grad_v[:, head // n_rep, :k_end] += torch.matmul(tile.transpose(-1, -2), g[:, head, start:end])
    return grad_v


class FrozenPatternAV(torch.autograd.Function):
    """``out = P v`` with ``P`` a constant recomputed from cached ``q, k``; gradient only to ``v``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, value: torch.Tensor, source: PatternSource, precomputed: torch.Tensor | None
    ) -> torch.Tensor:
        # the source's tensors are the run's cached queries/keys and memoised mask, not inputs
        # of this call: held by reference, never copied per layer
        ctx.source = source
        ctx.value_shape, ctx.value_dtype = value.shape, value.dtype
        q = source.query
        ctx.kept = keeps_pattern(q.shape[1], q.shape[2], source.key.shape[2], q.shape[0])
        if ctx.kept:
            pattern = source.whole()
            ctx.save_for_backward(pattern)
        if precomputed is not None:
            return precomputed
        if ctx.kept:
            n_rep = source.n_rep
            v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
            return pattern_times(pattern.to(v.dtype), v).transpose(1, 2)
        return _tiled_forward(value, source)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        source: PatternSource = ctx.source
        n_rep = source.n_rep
        b, kv_heads, k_len, dh = ctx.value_shape
        batch = max(grad_out.shape[0], b)
        if ctx.kept and ctx.saved_tensors[0].shape[0] == 1:
            grad_v = _kept_backward(ctx.saved_tensors[0], grad_out, n_rep)
        elif ctx.kept:  # one pattern per copy
            (pattern,) = ctx.saved_tensors
            g = grad_out.transpose(1, 2).float()  # [B, H, Q, dh]
            grad_v = torch.matmul(pattern.transpose(-1, -2), g)
            if n_rep > 1:
                grad_v = grad_v.reshape(batch, kv_heads, n_rep, k_len, dh).sum(2)
        else:
            grad_v = _tiled_backward(grad_out.transpose(1, 2).float(), source, k_len)
        if b == 1 and batch > 1:
            grad_v = grad_v.sum(0, keepdim=True)
        return grad_v.to(ctx.value_dtype), None, None


def frozen_attention(run: FrozenRun, call: AttentionCall) -> tuple[torch.Tensor, None]:
    """One attention call of ``run`` (what a frozen pass's ``Session.attention`` returns).

    Record mode stores the queries and keys; its forward value is the model's own implementation
    (bit-identical to the original), or for eager attention tracewire's tiled computation, which
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
    source = PatternSource(q, k, mask, scale, softcap, n_rep)
    out = FrozenPatternAV.apply(call.value, source, precomputed)
    return out, None
