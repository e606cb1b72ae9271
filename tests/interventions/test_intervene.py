"""``intervene`` on tiny random models: no-ops are exact, ablations match graph edges, switches work."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.attribution.oracle import graph_dense
from tests.factories.models import ARCHS, random_ids
from tests.interventions.setups import KINDS, active_feature, engine, setup
from tracewire.attribution.engine import attribute
from tracewire.interventions import Intervener, Intervention, intervene

SWITCHES = [
    {},
    {"freeze_attention": False},
    {"constrained_layers": range(3)},
    {"constrained_layers": [1], "freeze_norms": True},
    {"propagate": "model"},
    {"propagate": "model", "freeze_attention": False},
]


@pytest.mark.parametrize(("arch", "kind"), list(itertools.product(ARCHS, KINDS)))
def test_setting_a_feature_to_its_current_value_changes_nothing(arch: str, kind: str) -> None:
    lm, ts = setup(arch, kind, "jumprelu")
    ids = random_ids(7, seed=1)
    with torch.no_grad():
        plain = lm.model(ids[None]).logits[0]
    e = Intervener(lm, ts)
    clean = e.clean(ids)
    assert torch.equal(clean.logits, plain)  # recording changes nothing either
    pos, feat, value = active_feature(clean.activations, 1)
    for switches in SWITCHES:
        result = e.run(clean, [Intervention.set_to(1, pos, feat, value)], **switches)
        assert torch.equal(result.logits, plain), switches
        assert torch.equal(result.activations, clean.stacked_activations()), switches
    # ...and the model is restored: a plain forward afterwards is unchanged.
    with torch.no_grad():
        assert torch.equal(lm.model(ids[None]).logits[0], plain)


@pytest.mark.parametrize(
    ("arch", "kind", "activation"),
    [
        ("llama", "skip", "jumprelu"),
        ("qwen3", "plt", "relu"),
        ("gemma2", "clt", "topk"),
        ("gemma3", "skip", "relu"),
        ("gpt2", "clt", "jumprelu"),
    ],
)
def test_constrained_ablation_moves_each_target_by_minus_its_edge(
    arch: str, kind: str, activation: str
) -> None:
    """Frozen model, every layer constrained: Δ(target) = −fraction · A[target, feature], for every
    downstream feature pre-activation and every logit target, to 1e-4."""
    lm, ts = setup(arch, kind, activation)
    graph = attribute(random_ids(7, seed=1), lm, ts, progress=False)
    dense = graph_dense(graph)
    e = Intervener(lm, ts)
    clean = e.clean(graph.tokens, prepend_bos=False)
    vectors = graph.target_vectors.float()
    layers, positions, features = graph.features.T
    encoders = torch.stack([ts.W_enc[int(lay)][int(f)] for lay, f in zip(layers, features)]).float()

    def reads(inputs: dict[int, torch.Tensor], final: torch.Tensor) -> torch.Tensor:
        x = torch.stack([inputs[int(lay)][int(p)] for lay, p in zip(layers, positions)]).float()
        return torch.cat([(x * encoders).sum(-1), final[-1].float() @ vectors.T])

    base = reads(clean.inputs, clean.final_residual)
    rows = torch.cat([torch.arange(graph.n_features), graph.target_offset + torch.arange(graph.n_targets)])
    fraction = 0.75
    checked = 0
    for node in range(0, graph.n_features, max(1, graph.n_features // 25)):
        layer, pos, feat = graph.features[node].tolist()
        ablation = [Intervention.scale_by(layer, pos, feat, 1 - fraction)]
        result = e.run(clean, ablation, constrained_layers=range(3), keep_activations=False)
        change = reads(result.inputs, result.final_residual) - base
        expected = -fraction * dense[rows, node]
        assert torch.allclose(change, expected, atol=1e-4, rtol=0), (node, (change - expected).abs().max())
        checked += 1
    assert checked >= 10
    assert dense[graph.target_offset :, : graph.n_features].abs().max() > 0.05  # the test has teeth


def test_ablation_propagates_unless_constrained() -> None:
    e = engine("llama", "plt", "relu")
    clean = e.clean(random_ids(7, seed=2))
    pos, feat, _ = active_feature(clean.activations, 0)
    ablation = [Intervention.ablate(0, pos, feat)]
    free = e.run(clean, ablation)
    frozen = e.run(clean, ablation, constrained_layers=range(3))
    assert free.activations[0, pos, feat] == 0 and frozen.activations[0, pos, feat] == 0
    # later features see the change in the free run, not in the constrained one
    assert not torch.equal(free.activations[1:], clean.stacked_activations()[1:])
    assert torch.equal(frozen.activations[1:], clean.stacked_activations()[1:])
    # earlier positions are untouched (causality)
    assert torch.equal(free.activations[:, :pos], clean.stacked_activations()[:, :pos])
    assert torch.equal(free.logits[:pos], clean.logits[:pos])
    assert not torch.allclose(free.logits[-1], clean.logits[-1])


def test_set_scale_add_and_slices() -> None:
    e = engine("qwen2", "clt", "jumprelu")
    clean = e.clean(random_ids(6, seed=3))
    acts = clean.stacked_activations()
    pos, feat, value = active_feature(clean.activations, 1)
    out = e.run(clean, [Intervention.scale_by(1, pos, feat, 3.0)], constrained_layers=range(3))
    assert out.activations[1, pos, feat] == pytest.approx(3 * value)
    out = e.run(clean, [Intervention.add(1, pos, feat, 0.5)], constrained_layers=range(3))
    assert out.activations[1, pos, feat] == pytest.approx(value + 0.5)
    out = e.run(clean, [Intervention.set_to(2, slice(2, None), 5, 1.25)], constrained_layers=range(3))
    assert torch.all(out.activations[2, 2:, 5] == 1.25)
    assert torch.equal(out.activations[2, :2, 5], acts[2, :2, 5])
    out = e.run(clean, [(0, -1, 4, 2.0)], constrained_layers=range(3))  # circuit-tracer tuple = set
    assert out.activations[0, -1, 4] == 2.0
    # composed in order: set to 2, then scale by 0.5
    both = [Intervention.set_to(0, (1, 3), 4, 2.0), Intervention.scale_by(0, (1, 3), 4, 0.5)]
    out = e.run(clean, both, constrained_layers=range(3))
    assert out.activations[0, [1, 3], 4].tolist() == [1.0, 1.0]


def test_one_shot_function_and_steering_changes_prediction() -> None:
    lm, ts = setup("gpt2", "plt", "relu")
    ids = random_ids(6, seed=4)
    logits, acts = intervene(lm, ts, ids, [])
    assert logits.shape == (6, lm.vocab_size) and acts.shape == (3, 6, 24)
    steered, steered_acts = intervene(lm, ts, ids, [Intervention.set_to(1, -1, 3, 50.0)])
    assert steered_acts[1, -1, 3] == 50.0
    assert steered[-1].argmax() != logits[-1].argmax() or (steered[-1] - logits[-1]).abs().max() > 1.0


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Intervention(5, 1, 0, "set", 1.0), r"layer 5 is outside 0\.\.2"),
        (Intervention(0, 1, 24, "set", 1.0), r"feature 24 is outside 0\.\.23"),
        (Intervention(0, 9, 0, "set", 1.0), r"position 9 is outside the sequence"),
        (Intervention(0, -8, 0, "set", 1.0), r"position -8 is outside the sequence"),
        (Intervention(0, slice(7, 9), 0, "set", 1.0), r"selects no position"),
    ],
)
def test_bad_interventions_are_named(item: Intervention, message: str) -> None:
    e = engine("llama")
    clean = e.clean(random_ids(6))
    with pytest.raises(ValueError, match=message):
        e.run(clean, [item])


def test_bad_specs_and_settings() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        Intervention(0, 1, 2, "clamp", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="position must be"):
        Intervention(0, 1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        Intervention(0, 1, 2, "set", float("nan"))
    e = engine("llama")
    clean = e.clean(random_ids(5))
    with pytest.raises(ValueError, match=r"constrained_layers \[3\]"):
        e.run(clean, [], constrained_layers=[0, 3])
    with pytest.raises(ValueError, match="propagate must be one of"):
        e.run(clean, [], propagate="iterative")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need transcoders"):
        Intervener(e.loaded)


@pytest.mark.parametrize(("arch", "kind"), [("llama", "skip"), ("gemma2", "clt"), ("gpt2", "plt")])
def test_a_batch_of_intervention_sets_equals_one_run_each(arch: str, kind: str) -> None:
    e = engine(arch, kind, "jumprelu")
    clean = e.clean(random_ids(7, seed=5))
    pos, feat, _ = active_feature(clean.activations, 0)
    sets = [
        [],
        [Intervention.ablate(0, pos, feat)],
        [Intervention.set_to(1, slice(3, None), 2, 2.0), Intervention.add(2, -1, 4, 1.0)],
    ]
    for switches in SWITCHES[:4]:
        batched = e.run_batch(clean, sets, **switches)
        for items, got in zip(sets, batched):
            alone = e.run(clean, items, **switches)
            assert torch.allclose(got.logits, alone.logits, atol=1e-5), switches
            assert torch.allclose(got.activations, alone.activations, atol=1e-5), switches
            assert torch.allclose(got.final_residual, alone.final_residual, atol=1e-5), switches
    assert torch.equal(e.run_batch(clean, [[]])[0].logits, clean.logits)
