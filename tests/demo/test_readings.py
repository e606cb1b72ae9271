"""Readings: the groups that carry a graph's answer, and the two ablation checks of each group.

The real-model check is compared with an independent computation: plain PyTorch forward hooks on
the tiny model's MLPs that subtract each ablated feature's decoder write (``a · W_dec`` with ``a``
the transcoder's activation on the hooked MLP input), as the module docstring defines the setting.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.factories.models import random_ids
from tests.interventions.setups import setup
from tracewire.attribution.engine import attribute
from tracewire.demo.readings import _bands, check_reading, read_graph
from tracewire.evaluation.propagation import predicted_effects
from tracewire.interventions.api import Intervener


@pytest.fixture(scope="module")
def made():
    lm, ts = setup("llama", "skip", "relu", seed=2)
    graph = attribute(random_ids(7, seed=4), lm, ts, progress=False)
    return lm, ts, graph


def test_bands_split_the_depth_in_thirds():
    assert _bands(30) == [(0, 5), (6, 11), (12, 17), (18, 23), (24, 29)]
    assert _bands(3) == [(0, 0), (1, 1), (2, 2)]
    assert _bands(8, 3) == [(0, 2), (3, 4), (5, 7)]


def test_groups_hold_the_most_supportive_features_by_place(made):
    _, _, graph = made
    labels = {(int(la), int(f)): f"feature {int(la)}/{int(f)}" for la, _, f in graph.features.tolist()}
    reading = read_graph(graph, labels, top_features=12, max_candidates=6)
    assert 1 <= len(reading.groups) <= 6
    effects = predicted_effects(graph, torch.arange(graph.n_features), -graph.activations.double())
    change = effects.total_targets[:, 0]
    chosen = [f["node"] for group in reading.groups for f in group.features]
    assert len(set(chosen)) == len(chosen) and all(float(change[n]) < 0 for n in chosen)
    sums = [group.predicted_logit_change for group in reading.groups]
    assert sums == sorted(sums)  # most supportive (most negative) group first
    for group in reading.groups:
        lo, hi = group.layers
        for feature in group.features:
            node = feature["node"]
            layer, pos, feat = (int(v) for v in graph.features[node])
            assert lo <= layer <= hi and pos == group.position and feat == feature["feature"]
            assert feature["label"] == f"feature {layer}/{feat}"
        assert group.predicted_logit_change == pytest.approx(
            float(change[[f["node"] for f in group.features]].sum()), abs=1e-3
        )


def test_checks_match_an_independent_real_model_ablation(made):
    lm, ts, graph = made
    candidates = read_graph(graph, top_features=12)
    proposed = list(candidates.groups)
    reading = check_reading(candidates, graph, Intervener(lm, ts), max_groups=6)
    assert reading.checked and {id(g) for g in reading.groups + reading.refuted} == {id(g) for g in proposed}
    assert all(g.confirmed for g in reading.groups) and not any(g.confirmed for g in reading.refuted)
    assert [g.p_model for g in reading.groups] == sorted(g.p_model for g in reading.groups)
    target = int(graph.target_token_ids[0])
    with torch.no_grad():
        clean_p = torch.softmax(lm.model(graph.tokens[None]).logits[0, -1].double(), -1)[target]
    for group in proposed:
        assert group.p_clean == pytest.approx(float(clean_p), abs=1e-5)
        assert 0.0 <= group.p_replacement <= 1.0
        by_layer: dict[int, list[tuple[int, int]]] = {}
        for f in group.features:
            by_layer.setdefault(f["layer"], []).append((group.position, f["feature"]))
        handles = []
        for layer, items in by_layer.items():

            def hook(module, inputs, output, layer=layer, items=items):
                acts = ts.encode(layer, inputs[0][0])  # [T, d_tc] on the live MLP input
                out = output.clone()
                for pos, feat in items:
                    out[0, pos] -= acts[pos, feat] * ts.W_dec[layer][feat]
                return out

            handles.append(lm.model.model.layers[layer].mlp.register_forward_hook(hook))
        try:
            with torch.no_grad():
                logits = lm.model(graph.tokens[None]).logits[0, -1]
        finally:
            for handle in handles:
                handle.remove()
        expected = float(torch.softmax(logits.double(), -1)[target])
        assert group.p_model == pytest.approx(expected, abs=1e-5)
    assert max(abs(g.p_model - g.p_clean) for g in proposed) > 1e-3  # the ablations do something
    data = json.loads(json.dumps(reading.to_json()))
    assert data["confirmed"] == len(data["groups"]) and len(data["refuted"]) == len(reading.refuted)
    for group in reading.groups + reading.refuted:
        assert f"{group.p_clean:.3f} -> {group.p_replacement:.3f}" in data["text"]
