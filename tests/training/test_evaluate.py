"""Evaluation metrics against hand-computed values, and the spliced model against a hand-written splice."""

from __future__ import annotations

import math

import pytest
import torch

from tests.factories.models import tiny_model
from tests.training.helpers import tiny_corpus
from tracewire.training.activations import layer_activations
from tracewire.training.evaluate import ce_recovered, evaluate_transcoders, logit_metrics, spliced
from tracewire.transcoders.synthetic import random_clt, random_plt


def test_logit_metrics_by_hand():
    # one sequence of 3 positions over a 2-token vocabulary; position 0 (BOS) is ignored
    orig = torch.tensor([[[9.0, 9.0], [0.0, math.log(3.0)], [math.log(4.0), 0.0]]])
    new = torch.tensor([[[0.0, 0.0], [0.0, math.log(1.5)], [0.0, math.log(4.0)]]])
    ids = torch.tensor([[0, 1, 1]])
    m = logit_metrics(orig, new, ids)
    p1, p2 = [0.25, 0.75], [0.8, 0.2]  # softmax of orig at positions 1, 2
    q1, q2 = [0.4, 0.6], [0.2, 0.8]
    kl = sum(p * math.log(p / q) for ps, qs in ((p1, q1), (p2, q2)) for p, q in zip(ps, qs))
    assert m["kl_sum"] == pytest.approx(kl, rel=1e-5)
    assert m["agree_sum"] == 1.0 and m["n_positions"] == 2.0  # argmax agrees at 1, not at 2
    # the only next-token target inside positions 1..: logits at position 1 predict ids[0, 2] = 1
    assert m["ce_orig_sum"] == pytest.approx(-math.log(0.75)) and m["ce_new_sum"] == pytest.approx(
        -math.log(0.6)
    )
    assert m["n_targets"] == 1.0
    assert ce_recovered(3.0, 2.0, 1.0) == pytest.approx(0.5)
    assert ce_recovered(3.0, 1.0, 1.0) == pytest.approx(1.0)


def _reference_spliced_logits(loaded, ts, ids):
    """Replace each MLP by hand: patch ``mlp.forward`` so layer l returns the set's reconstruction."""
    acts: dict[int, torch.Tensor] = {}
    originals = []
    for layer in range(loaded.n_layers):
        mlp = loaded.adapter.mlp_module(loaded.model, layer)
        original = mlp.forward
        originals.append((mlp, original))

        def forward(x, layer=layer, original=original):
            acts[layer] = ts.encode(layer, x)
            out = ts.b_dec[layer] + ts.skip(layer, x)
            for src in range(layer + 1):
                if layer in ts.output_layers(src):
                    out = out + ts.decode(src, acts[src])[..., layer - src, :]
            out[:, 0] = original(x)[:, 0]
            return out

        mlp.forward = forward
    try:
        return loaded.model(ids).logits
    finally:
        for mlp, original in originals:
            mlp.forward = original


@pytest.mark.parametrize("make", [lambda: random_plt(3, 16, 24, skip=True), lambda: random_clt(3, 16, 24)])
@torch.no_grad()
def test_spliced_model_matches_a_hand_written_splice(make):
    loaded = tiny_model("llama", n_layers=3, d_model=16)
    ts = make()
    ids = torch.tensor([[0, 5, 7, 2, 9, 11], [0, 3, 4, 5, 6, 7]])
    with spliced(loaded, ts):
        got = loaded.model(ids).logits
    torch.testing.assert_close(got, _reference_spliced_logits(loaded, ts, ids))
    assert not torch.allclose(got, loaded.model(ids).logits)  # hooks are gone afterwards, and mattered


@torch.no_grad()
def test_evaluate_against_hand_computed_values(tmp_path):
    loaded = tiny_model("llama", n_layers=3, d_model=16)
    corpus = tiny_corpus(tmp_path)
    ts = random_plt(3, 16, 24, activation="relu", skip=True)
    report = evaluate_transcoders(
        loaded, ts, corpus, seq_len=16, n_windows=6, batch_windows=3, progress=False
    )
    first = report["windows"]["first"]
    ids = corpus.batch(range(first, first + 6), 16)
    x, y = layer_activations(loaded, ids, "mlp_in", "mlp_out")
    for layer in range(3):
        recon = ts.reconstruct(list(x))[layer]
        fvu = ((recon - y[layer]) ** 2).sum() / ((y[layer] - y[layer].mean(0)) ** 2).sum()
        assert report["nmse_per_layer"][layer] == pytest.approx(float(fvu), rel=1e-4)
        l0 = (ts.encode(layer, x[layer]) > 0).float().sum(-1).mean()
        assert report["l0_per_layer"][layer] == pytest.approx(float(l0), rel=1e-4)
    orig = loaded.model(ids).logits
    new = _reference_spliced_logits(loaded, ts, ids)
    m = logit_metrics(orig, new, ids)
    sp = report["spliced"]
    assert sp["kl"] == pytest.approx(m["kl_sum"] / m["n_positions"], rel=1e-4)
    assert sp["top1_agreement"] == pytest.approx(m["agree_sum"] / m["n_positions"])
    assert sp["ce_orig"] == pytest.approx(m["ce_orig_sum"] / m["n_targets"], rel=1e-5)

    # A set that writes nothing is exactly the zero-ablated model: CE recovered 0, every feature dead.
    silent = random_plt(3, 16, 24, activation="relu")
    for layer in range(3):
        silent.W_dec[layer].zero_()
        silent.b_dec[layer].zero_()
        silent.b_enc[layer].fill_(-1e6)
    zero = evaluate_transcoders(
        loaded, silent, corpus, seq_len=16, n_windows=6, batch_windows=3, progress=False
    )
    assert zero["spliced"]["ce_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert zero["spliced"]["ce_spliced"] == pytest.approx(zero["spliced"]["ce_zero_ablated"])
    assert zero["dead_frac_mean"] == 1.0 and zero["l0_mean"] == 0.0
