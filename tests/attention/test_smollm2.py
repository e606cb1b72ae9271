"""On the real embedded model (slow): SmolLM2-135M's attention is recomputed exactly, loadings
and QK attributions are exact there too, and layer 23 head 4 is the head that moves "France"."""

from __future__ import annotations

import pytest
import torch

from tracewire.attention import TraceContext, qk_attribution, target_loadings
from tracewire.attribution.engine import attribute
from tracewire.models.loading import load_model
from tracewire.transcoders.calibrated import calibrated_random_plt

pytestmark = pytest.mark.slow


def test_france_mover_head_on_smollm2() -> None:
    model = load_model("smollm2-135m")
    transcoders = calibrated_random_plt(model, n_features=1024, target_active=30)
    graph = attribute("The capital of France is", model, transcoders, max_feature_nodes=32, progress=False)
    assert graph.target_labels[0] == " Paris"
    ctx = TraceContext.build(graph, model, transcoders)
    split = target_loadings(ctx, graph.target_index(0))
    # every edge into " Paris" = direct + heads
    into = (graph.edge_targets == graph.target_index(0)).nonzero(as_tuple=True)[0]
    sources = torch.tensor([ctx.sources.source_of_node(int(s)) for s in graph.edge_sources[into]])
    total = split.direct[sources] + split.heads[:, :, sources].sum((0, 1))
    edges = graph.edge_weights[into]
    assert torch.allclose(total, edges, atol=1e-4, rtol=1e-3), float((total - edges).abs().max())
    # what "France" (position 4) sends to " Paris" goes through heads only, mostly layer 23 head 4
    at_france = torch.tensor([ctx.sources.describe(i)["pos"] == 4 for i in range(ctx.sources.size)])
    assert float(split.direct[at_france].abs().sum()) == 0.0
    per_head = split.heads[:, :, at_france].sum(-1)
    assert divmod(int(per_head.flatten().argmax()), 9) == (23, 4)
    (qk,) = qk_attribution(graph, ctx, layer=23, head=4, query=5, keys=[4])
    assert qk.kv_head == 1 and qk.pattern > 0.9
    assert qk.decomposed_score() == pytest.approx(qk.score, abs=1e-3)
