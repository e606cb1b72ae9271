"""QK attribution: an attention score written as a sum over (query-side, key-side) source pairs.

In the frozen model the query of head ``h`` at position ``q`` is an affine function of the sources
(features, errors, tokens): the residual stream is their sum plus constants, and the pre-attention
norm (scale frozen), the query projection, the q norm (Qwen3, Gemma-3; scale frozen like every
other norm) and RoPE (a fixed rotation per position) are all linear or affine. So

    q = Σ_i Q_i + Q_c,        k = Σ_j K_j + K_c        (k: the key/value head ``h`` reads, at key ``k``)

with ``Q_i`` the part of the query that source ``i`` makes (the Jacobian of ``q`` times the
source's vector) and ``Q_c`` everything constant (biases, ``b_dec``, learned positions, the
zeroed BOS position's MLP outputs). The pre-softmax score (before any softcap) is bilinear:

    s / scaling = q·k = Σ_ij Q_i·K_j  +  Σ_i Q_i·K_c  +  Q_c·Σ_j K_j  +  Q_c·K_c

the *pair table* plus three constant terms, exactly. Marginals: a query-side source's total is
``scaling Q_i·k`` (its pairs plus its pair with the key constant), a key-side source's
``scaling q·K_j``; each side's marginals plus its constant's sum to ``s``.

Softcaps (Gemma-2) act after the score: the capped score ``c·tanh(s/c)`` is reported next to
``s``, but only ``s`` is decomposed (``tanh`` is not linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tracewire.attention.access import (
    QKProjector,
    additive_mask,
    attention_scaling,
    attention_softcap,
    capture_attention,
    check_against_state,
    head_geometry,
)
from tracewire.attention.sources import Sources, TraceContext
from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.models.loading import LoadedModel
from tracewire.replacement.model import ReplacementModel

#: Pairs compared per block when searching the largest ones (bounds memory on long prompts).
PAIR_BLOCK = 4096


@dataclass
class QKAttribution:
    """One (layer, head, query, key) score and its decomposition over source pairs."""

    layer: int
    head: int
    kv_head: int
    query: int
    key: int
    scaling: float
    softcap: float | None
    score: float  # scaling · q·k from the clean run's stored queries and keys (pre-softcap)
    pattern: float  # the frozen attention weight of this key at this query
    query_sources: torch.Tensor  # int64 [nq]: sources with a non-zero part of the query
    query_parts: torch.Tensor  # [nq, dh]: Q_i
    query_constant: torch.Tensor  # [dh]: Q_c
    key_sources: torch.Tensor  # int64 [nk]
    key_parts: torch.Tensor  # [nk, dh]: K_j
    key_constant: torch.Tensor  # [dh]: K_c
    sources: Sources

    # ------------------------------------------------------------------ the decomposition
    @property
    def query_vector(self) -> torch.Tensor:
        return self.query_parts.sum(0) + self.query_constant

    @property
    def key_vector(self) -> torch.Tensor:
        return self.key_parts.sum(0) + self.key_constant

    @property
    def capped_score(self) -> float:
        """The score after the softcap (the score itself where the model has none)."""
        if self.softcap is None:
            return self.score
        return float(self.softcap * torch.tanh(torch.tensor(self.score / self.softcap)))

    def pairs(self) -> torch.Tensor:
        """``[nq, nk]``: ``scaling · Q_i·K_j`` (dense: for short prompts; see :meth:`top_pairs`)."""
        return self.scaling * self.query_parts @ self.key_parts.T

    def constants(self) -> dict[str, float]:
        """The three constant terms of the score."""
        s = self.scaling
        return {
            "query_sources_x_key_constant": float(s * self.query_parts.sum(0) @ self.key_constant),
            "query_constant_x_key_sources": float(s * self.query_constant @ self.key_parts.sum(0)),
            "query_constant_x_key_constant": float(s * self.query_constant @ self.key_constant),
        }

    def pair_total(self) -> float:
        """Σ of every pair, without building the table: ``scaling (Σ Q_i)·(Σ K_j)``."""
        return float(self.scaling * self.query_parts.sum(0) @ self.key_parts.sum(0))

    def decomposed_score(self) -> float:
        """Pairs + constants (equals :attr:`score` up to float rounding)."""
        return self.pair_total() + sum(self.constants().values())

    def query_marginals(self) -> torch.Tensor:
        """``[nq]``: ``scaling · Q_i·k`` — each query-side source's pairs and its key-constant term."""
        return self.scaling * self.query_parts @ self.key_vector

    def key_marginals(self) -> torch.Tensor:
        """``[nk]``: ``scaling · q·K_j``."""
        return self.scaling * self.key_parts @ self.query_vector

    def top_pairs(self, n: int = 20) -> list[tuple[int, int, float]]:
        """The ``n`` largest |pairs| as ``(query source, key source, value)``, found block by block."""
        best_val = torch.empty(0)
        best_idx = torch.empty(0, dtype=torch.long)
        nk = int(self.key_parts.shape[0])
        if n <= 0 or nk == 0:
            return []
        for start in range(0, int(self.query_parts.shape[0]), PAIR_BLOCK):
            block = self.scaling * self.query_parts[start : start + PAIR_BLOCK] @ self.key_parts.T
            flat = block.flatten()
            take = min(n, int(flat.numel()))
            top = torch.topk(flat.abs(), take).indices
            best_val = torch.cat([best_val, flat[top]])
            best_idx = torch.cat([best_idx, top + start * nk])
            keep = torch.topk(best_val.abs(), min(n, int(best_val.numel()))).indices
            best_val, best_idx = best_val[keep], best_idx[keep]
        order = torch.argsort(best_val.abs(), descending=True)
        return [
            (
                int(self.query_sources[int(best_idx[i]) // nk]),
                int(self.key_sources[int(best_idx[i]) % nk]),
                float(best_val[i]),
            )
            for i in order
        ]

    # ------------------------------------------------------------------ JSON
    def to_json(self, n_pairs: int = 20, n_marginals: int = 20) -> dict[str, Any]:
        """A JSON-ready summary: the score, constants, top pairs and top marginals per side."""
        describe = self.sources.describe

        def top_marginals(values: torch.Tensor, sources: torch.Tensor) -> list[dict[str, Any]]:
            order = torch.argsort(values.abs(), descending=True)[:n_marginals]
            return [{"source": describe(int(sources[i])), "value": float(values[i])} for i in order]

        pairs = self.top_pairs(n_pairs)
        return {
            "layer": self.layer,
            "head": self.head,
            "kv_head": self.kv_head,
            "query": self.query,
            "key": self.key,
            "scaling": self.scaling,
            "softcap": self.softcap,
            "score": self.score,
            "capped_score": self.capped_score,
            "pattern": self.pattern,
            "constants": self.constants(),
            "pair_total": self.pair_total(),
            "listed_pair_total": sum(v for _, _, v in pairs),
            "pairs": [
                {"query_source": describe(i), "key_source": describe(j), "value": v} for i, j, v in pairs
            ],
            "query_marginals": top_marginals(self.query_marginals(), self.query_sources),
            "query_constant_marginal": float(self.scaling * self.query_constant @ self.key_vector),
            "key_marginals": top_marginals(self.key_marginals(), self.key_sources),
            "key_constant_marginal": float(self.scaling * self.query_vector @ self.key_constant),
        }


@dataclass
class HeadScores:
    """A head's scores at one query over keys ``0..query`` (clean run), with what the model does to them."""

    layer: int
    head: int
    kv_head: int
    query: int
    scores: torch.Tensor  # [query + 1] pre-softcap
    pattern: torch.Tensor  # [query + 1] attention weights (softcap and mask applied)
    projector: QKProjector


def head_scores(ctx: TraceContext, layer: int, head: int, query: int) -> HeadScores:
    """Recompute the head's queries and keys from its input, check them, and score every key."""
    rm = ctx.rm
    geometry = head_geometry(rm)
    _check_indices(ctx, layer, head, query)
    kv_head = geometry.kv_head(head)
    length = query + 1
    with torch.no_grad(), capture_attention(rm, [layer]) as cap:
        rm.replay(ctx.state, length=length, stop_after_layer=layer)
        projector = QKProjector.freeze(rm, layer, cap.hidden[layer])
        q, k = projector.project(cap.hidden[layer], cap.rotary[layer])
        mask = cap.mask[layer]
    check_against_state(q, k, ctx.state, layer)
    stored_q = ctx.state.queries[layer][0, head, query].float()
    stored_k = ctx.state.keys[layer][0, kv_head, :length].float()
    scaling, softcap = attention_scaling(rm, layer), attention_softcap(rm, layer)
    scores = scaling * stored_k @ stored_q
    capped = softcap * torch.tanh(scores / softcap) if softcap is not None else scores
    pattern = torch.softmax(capped.cpu() + additive_mask(mask, query, length), dim=-1).nan_to_num(0.0)
    return HeadScores(layer, head, kv_head, query, scores.cpu(), pattern, projector)


def qk_attribution(
    graph: Graph,
    model: ReplacementModel | LoadedModel | TraceContext,
    transcoders: Any | None = None,
    *,
    layer: int,
    head: int,
    query: int,
    keys: Sequence[int] | None = None,
    top_k: int = 5,
) -> list[QKAttribution]:
    """Decompose head ``head``'s scores at ``query`` for ``keys`` (default: its ``top_k`` keys by weight)."""
    ctx = model if isinstance(model, TraceContext) else TraceContext.build(graph, model, transcoders)
    scored = head_scores(ctx, layer, head, query)
    if keys is None:
        keys = torch.topk(scored.pattern, min(top_k, query + 1)).indices.tolist()
    keys = [int(k) for k in keys]
    for key in keys:
        if not 0 <= key <= query:
            raise InvalidArgumentError(
                f"key position {key} must lie in 0..{query} (causal: at or before the query)"
            )
    jq, jk, q_val, k_val = _jacobians(ctx, scored, keys)
    return [_split(ctx, scored, key, jq, jk[m], q_val, k_val[key]) for m, key in enumerate(keys)]


def _jacobians(
    ctx: TraceContext, scored: HeadScores, keys: list[int]
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per source, its part of the query and of each key: ``[dh, n_sources]`` each, and the values.

    One replay with ``dh · (1 + len(keys))`` copies: copy ``c`` asks for query component ``c``,
    copy ``dh·(1 + m) + c`` for component ``c`` of key ``keys[m]``.
    """
    rm, layer, query = ctx.rm, scored.layer, scored.query
    dh = head_geometry(rm).head_dim
    copies = dh * (1 + len(keys))
    eye = torch.eye(dh)
    with torch.enable_grad(), capture_attention(rm, [layer]) as cap:
        run = rm.replay(ctx.state, length=query + 1, batch=copies, stop_after_layer=layer)
        q, k = scored.projector.project(cap.hidden[layer], cap.rotary[layer])
        q_sel, k_sel = q[:, scored.head, query], k[:, scored.kv_head]  # [B, dh], [B, P, dh]
        q_seed, k_seed = torch.zeros_like(q_sel), torch.zeros_like(k_sel)
        q_seed[:dh] = eye.to(q_seed)
        for m, key in enumerate(keys):
            k_seed[dh * (1 + m) : dh * (2 + m), key] = eye.to(k_seed)
        values, _ = ctx.sources.contract(run, [q_sel, k_sel], [q_seed, k_seed])
        q_val, k_val = q_sel[0].detach().float().cpu(), k_sel[0].detach().float().cpu()
    values = values.cpu()
    jk = [values[dh * (1 + m) : dh * (2 + m)] for m in range(len(keys))]
    return values[:dh], jk, q_val, k_val


def _split(
    ctx: TraceContext,
    scored: HeadScores,
    key: int,
    jq: torch.Tensor,
    jk: torch.Tensor,
    q_val: torch.Tensor,
    k_val: torch.Tensor,
) -> QKAttribution:
    q_src = (jq != 0).any(0).nonzero(as_tuple=True)[0]
    k_src = (jk != 0).any(0).nonzero(as_tuple=True)[0]
    q_parts, k_parts = jq[:, q_src].T.contiguous(), jk[:, k_src].T.contiguous()
    return QKAttribution(
        layer=scored.layer,
        head=scored.head,
        kv_head=scored.kv_head,
        query=scored.query,
        key=key,
        scaling=attention_scaling(ctx.rm, scored.layer),
        softcap=attention_softcap(ctx.rm, scored.layer),
        score=float(scored.scores[key]),
        pattern=float(scored.pattern[key]),
        query_sources=q_src,
        query_parts=q_parts,
        query_constant=q_val - q_parts.sum(0),
        key_sources=k_src,
        key_parts=k_parts,
        key_constant=k_val - k_parts.sum(0),
        sources=ctx.sources,
    )


def _check_indices(ctx: TraceContext, layer: int, head: int, query: int) -> None:
    geometry = head_geometry(ctx.rm)
    if not 0 <= layer < ctx.rm.n_layers:
        raise InvalidArgumentError(f"layer {layer} outside 0..{ctx.rm.n_layers - 1}")
    if not 0 <= head < geometry.n_heads:
        raise InvalidArgumentError(f"head {head} outside 0..{geometry.n_heads - 1}")
    if not 0 <= query < ctx.graph.n_pos:
        raise InvalidArgumentError(f"query position {query} outside 0..{ctx.graph.n_pos - 1}")
