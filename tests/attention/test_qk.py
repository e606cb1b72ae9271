"""QK attributions against independent computations (tiny random models, all six architectures, fp32).

Covered per architecture: RoPE (all but GPT-2), grouped-query attention (kv heads = heads / 2),
Qwen3's and Gemma-3's q/k norms (frozen), Gemma-2's softcap (set to 0.25 so it bends the scores),
Gemma's query_pre_attn_scalar, GPT-2's fused c_attn and learned positions (a constant).
"""

from __future__ import annotations

import pytest
import torch

from tests.attention.factory import traced
from tests.attention.oracle import qk_jacobians, source_free_qk
from tests.factories.models import ARCHS
from tracewire.attention.access import head_geometry
from tracewire.attention.qk import qk_attribution
from tracewire.attention.sources import TraceContext

ATOL, RTOL = 1e-5, 1e-4


def _close(got: torch.Tensor | float, want: torch.Tensor | float, scale: float) -> None:
    gap = float(torch.as_tensor(got - want).abs().max())
    assert gap <= ATOL + RTOL * abs(scale), f"{got} != {want} (gap {gap:.3g})"


def _eager_patterns(rm, graph) -> tuple[torch.Tensor, ...]:
    """The model's own attention weights (HF eager attention, no tracewire code in the path)."""
    model = rm.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=graph.tokens[None], output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(before)
    return out.attentions


@pytest.mark.parametrize("arch", ARCHS)
def test_every_score_is_pairs_plus_constants_and_pairs_are_jacobian_bilinear_forms(arch: str) -> None:
    rm, graph = traced(arch)
    ctx = TraceContext.build(graph, rm)
    assert bool((ctx.sources.node_ids >= 0).all())  # an unbudgeted graph: every source is a node
    geometry = head_geometry(rm)
    patterns = _eager_patterns(rm, graph)
    n_src = ctx.sources.size
    oracle_order = ctx.sources.node_ids  # source i is oracle source node_ids[i] (graph node order)
    checked = 0
    for layer in range(rm.n_layers):
        jq, jk = qk_jacobians(rm, graph, layer)  # [S, H, P, dh], [S, Hkv, P, dh] in graph node order
        free_q, free_k = source_free_qk(rm, graph, layer)
        for head in range(geometry.n_heads):
            kv = geometry.kv_head(head)
            for query in range(graph.n_pos):
                keys = list(range(query + 1))
                results = qk_attribution(graph, ctx, layer=layer, head=head, query=query, keys=keys)
                for a in results:
                    assert a.kv_head == kv
                    scale = abs(a.score) + 1.0
                    # pairs + constants = the score from the model's own stored q and k
                    _close(a.decomposed_score(), a.score, scale)
                    # each pair = scaling · (Jacobian part of q) · (Jacobian part of k)
                    pairs = torch.zeros(n_src, n_src)
                    pairs[a.query_sources[:, None], a.key_sources[None, :]] = a.pairs()
                    q_parts = jq[oracle_order, head, query]
                    k_parts = jk[oracle_order, kv, a.key]
                    _close(pairs, a.scaling * q_parts @ k_parts.T, scale)
                    # constants = q and k with every source removed
                    _close(a.query_constant, free_q[head, query], scale)
                    _close(a.key_constant, free_k[kv, a.key], scale)
                    # marginals: each side sums to the score with its constant
                    _close(
                        a.query_marginals().sum() + a.to_json(0, 0)["query_constant_marginal"], a.score, scale
                    )
                    _close(a.key_marginals().sum() + a.to_json(0, 0)["key_constant_marginal"], a.score, scale)
                    checked += 1
                # softcap + mask + softmax of the decomposed scores = the model's attention weights
                scores = torch.tensor([a.decomposed_score() for a in results])
                if a.softcap is not None:
                    scores = a.softcap * torch.tanh(scores / a.softcap)
                weights = patterns[layer][0, head, query, : query + 1]
                mask = torch.tensor([a.pattern > 0 for a in results])
                mine = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
                assert torch.allclose(mine, weights, atol=1e-5), (mine, weights)
                assert torch.allclose(torch.tensor([a.pattern for a in results]), weights, atol=1e-5)
    assert checked == rm.n_layers * geometry.n_heads * graph.n_pos * (graph.n_pos + 1) // 2


def test_softcap_and_qk_norms_are_exercised() -> None:
    rm, graph = traced("gemma2")
    ctx = TraceContext.build(graph, rm)
    capped = [
        a
        for head in range(4)
        for a in qk_attribution(graph, ctx, layer=1, head=head, query=4, keys=range(5))
        if abs(a.capped_score - a.score) > 0.05 * abs(a.score)
    ]
    assert capped, "the tiny softcap should bend some scores"
    for arch in ("qwen3", "gemma3"):
        rm, graph = traced(arch)
        attn = rm.adapter.attn_module(rm.model, 0)
        assert hasattr(attn, "q_norm") and hasattr(attn, "k_norm")


def test_top_keys_default_and_bad_positions() -> None:
    rm, graph = traced("qwen2")
    ctx = TraceContext.build(graph, rm)
    results = qk_attribution(graph, ctx, layer=2, head=3, query=4, top_k=2)
    assert len(results) == 2 and results[0].pattern >= results[1].pattern
    summary = results[0].to_json(n_pairs=5, n_marginals=5)
    assert len(summary["pairs"]) == 5 and summary["kv_head"] == 1
    pairs = results[0].pairs().flatten()
    assert abs(summary["pairs"][0]["value"]) == pytest.approx(float(pairs.abs().max()), rel=1e-6)
    with pytest.raises(ValueError, match="key position 5"):
        qk_attribution(graph, ctx, layer=0, head=0, query=4, keys=[5])
    with pytest.raises(ValueError, match="head 4"):
        qk_attribution(graph, ctx, layer=0, head=4, query=4)
