"""Training on a tiny model's streamed activations: every kind/activation learns, exports and reloads."""

from __future__ import annotations

import json

import pytest
import torch

from tests.factories.models import tiny_model
from tests.training.helpers import tiny_config, tiny_corpus, tiny_source
from tracewire.training import CachedActivations, train_transcoders
from tracewire.training.activations import layer_activations
from tracewire.training.losses import layer_fvu
from tracewire.transcoders import load_transcoders

CASES = [
    ("plt", "relu", None),
    ("plt", "jumprelu", None),
    ("skip-plt", "topk", 4),
    ("plt", "batchtopk", 4),
    ("clt", "jumprelu", None),
    ("clt", "topk", 4),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(("kind", "activation", "k"), CASES)
def test_learns_exports_and_reloads(tmp_path, corpus, kind, activation, k):
    config = tiny_config(kind=kind, activation=activation, k=k, checkpoint_every=1000)
    source = tiny_source(corpus, config)
    result = train_transcoders(config, source, tmp_path / "out", model_name="tiny-llama", progress=False)
    curves = result.curves
    assert len(curves) == config.total_steps
    first, last = curves[0], curves[-1]
    assert last["mse"] < 0.7 * first["mse"], (first, last)

    # The exported (folded) set reloads through the Foundation loader ...
    ts = load_transcoders(tmp_path / "out", n_layers=3, d_model=16)
    assert ts.kind == ("clt" if kind == "clt" else "plt") and ts.has_skip == (kind == "skip-plt")
    # ... and its reconstruction in model units equals the trained module's de-standardised one.
    x, y = source.eval_batch()
    module = result.module.eval()
    xs, _ = module.standardise(x, y)
    recon_std, _, _ = module(xs)
    recon_module = recon_std * module.s_out[:, None, None] + module.mu_out[:, None, :]
    recon_export = torch.stack(ts.reconstruct(list(x)))
    torch.testing.assert_close(recon_export, recon_module, rtol=1e-4, atol=1e-4)
    # ... with the NMSE the trainer reported on the held-out windows.
    reported = json.loads((tmp_path / "out" / "training.json").read_text())["eval"]
    expected = torch.tensor(reported["nmse_per_layer"])
    torch.testing.assert_close(layer_fvu(recon_export, y), expected, rtol=1e-3, atol=1e-5)
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "out" / "curves.json").read_text())) == len(curves)


def test_activations_come_from_one_truncated_forward(corpus):
    loaded = tiny_model("llama", n_layers=3, d_model=16)
    ids = corpus.batch([0, 1], 16)
    x, y = layer_activations(loaded, ids, "mlp_in", "mlp_out")
    assert x.shape == y.shape == (3, 2 * 15, 16)
    # reference: a full forward with a hook on every MLP
    seen = {}
    handles = [loaded.adapter.mlp_module(loaded.model, i).register_forward_hook(
        lambda m, a, o, i=i: seen.__setitem__(i, (a[0], o))) for i in range(3)]  # fmt: skip
    calls = []
    final = loaded.adapter.final_norm_module(loaded.model).register_forward_hook(lambda *a: calls.append(1))
    loaded.model(ids)
    for h in [*handles, final]:
        h.remove()
    for i in range(3):
        torch.testing.assert_close(x[i], seen[i][0][:, 1:].reshape(-1, 16))
        torch.testing.assert_close(y[i], seen[i][1][:, 1:].reshape(-1, 16))
    calls.clear()
    final = loaded.adapter.final_norm_module(loaded.model).register_forward_hook(lambda *a: calls.append(1))
    layer_activations(loaded, ids, "mlp_in", "mlp_out")
    final.remove()
    assert calls == []  # the forward stopped after the last MLP


def test_resume_refuses_a_different_structure(tmp_path, corpus):
    config = tiny_config(tokens=8 * 15 * 4, checkpoint_every=2)
    source = tiny_source(corpus, config)
    train_transcoders(config, source, tmp_path, progress=False)
    with pytest.raises(ValueError, match="features"):
        train_transcoders(config.replace(features=64), source, tmp_path, resume=True, progress=False)


def test_cached_activations_replay_the_first_epoch(tmp_path, corpus):
    config = tiny_config()
    source = tiny_source(corpus, config)
    calls = []
    original = source.batch
    source.batch = lambda step, rank=0, world=1: calls.append(step) or original(step, rank, world)  # type: ignore[method-assign]
    cached = CachedActivations(source, tmp_path / "cache", period=3)
    first = [cached.batch(s) for s in range(3)]
    again = [cached.batch(s) for s in range(3, 6)]
    assert calls == [0, 1, 2]
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(first[1][0], original(1)[0])
    assert len(list((tmp_path / "cache").glob("step-*.safetensors"))) == 3


def test_refuses_to_overwrite_a_finished_set(tmp_path, corpus):
    config = tiny_config(tokens=8 * 15 * 2)
    source = tiny_source(corpus, config)
    train_transcoders(config, source, tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds a transcoder set"):
        train_transcoders(config, source, tmp_path, progress=False)


def test_time_limit_stops_cleanly_and_resume_finishes(tmp_path, corpus):
    config = tiny_config(tokens=8 * 15 * 6, checkpoint_every=4)
    source = tiny_source(corpus, config)
    stopped = train_transcoders(config, source, tmp_path / "a", progress=False, time_limit_s=0.0)
    assert stopped.report["stopped_at"] == 1 and not (tmp_path / "a" / "config.yaml").exists()
    done = train_transcoders(config, source, tmp_path / "a", progress=False, resume=True)
    straight = train_transcoders(config, source, tmp_path / "b", progress=False)
    for key, value in straight.module.state_dict().items():
        assert torch.equal(value, done.module.state_dict()[key]), key


def test_time_limit_can_finish_with_what_was_trained(tmp_path, corpus):
    config = tiny_config(tokens=8 * 15 * 6)
    source = tiny_source(corpus, config)
    result = train_transcoders(
        config, source, tmp_path, progress=False, time_limit_s=0, finish_at_time_limit=True
    )
    assert result.report["steps"] == 1 and result.report["planned_steps"] == 6
    assert load_transcoders(tmp_path).n_layers == 3


def test_schedules_follow_the_clock_under_a_time_budget():
    from tracewire.training.losses import learning_rate, sparsity_coefficient

    config = tiny_config(lr=1.0, decay_frac=0.2, warmup_frac=0.0, sparsity_warmup=0.5, sparsity_coef=2.0)
    assert learning_rate(config, 10, 100) == 1.0
    assert learning_rate(config, 10, 100, time_frac=0.9) == pytest.approx(0.5)  # halfway through the decay
    assert learning_rate(config, 95, 100) == pytest.approx(0.05 / 0.2)
    assert sparsity_coefficient(config, 9, 100) == pytest.approx(2.0 * 10 / 50)
    assert sparsity_coefficient(config, 9, 100, time_frac=0.4) == pytest.approx(2.0 * 0.8)


def test_auxk_feeds_only_dead_features_from_the_live_error():
    from tracewire.training.losses import auxk_loss
    from tracewire.training.module import TrainableTranscoders

    config = tiny_config(kind="skip-plt", activation="topk", k=2, auxk=4)
    module = TrainableTranscoders(config, 3, 16, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(3, 64, 16, generator=generator), torch.randn(3, 64, 16, generator=generator)
    with torch.no_grad():
        module.b_enc[:, 8:] = 50.0  # features 8.. always win the top-k: 0..7 never fire
    recon, acts, pre = module(xs)
    assert not acts[:, :, :8].any()
    dead = torch.zeros(3, 32, dtype=torch.bool)
    dead[:, :8] = True
    loss = auxk_loss(module, recon, ys, pre, dead)
    assert loss is not None and loss.item() > 0
    loss.backward()
    assert module.W_dec.grad[:, :8].abs().sum() > 0 and module.W_enc.grad[:, :8].abs().sum() > 0
    assert module.W_dec.grad[:, 8:].abs().sum() == 0 and module.W_enc.grad[:, 8:].abs().sum() == 0
    assert auxk_loss(module, recon, ys, pre, torch.zeros_like(dead)) is None


def test_data_init_puts_encoder_rows_on_real_inputs(corpus):
    from tracewire.training.module import TrainableTranscoders
    from tracewire.training.trainer import estimate_statistics, init_encoder_from_data

    config = tiny_config(kind="skip-plt", activation="batchtopk", k=4, encoder_init="data", auxk=8)
    source = tiny_source(corpus, config)
    module = TrainableTranscoders(config, 3, 16, torch.Generator().manual_seed(0))
    stats, _ = estimate_statistics(source, 2, 0, 1)
    module.set_standardisation(*stats)
    init_encoder_from_data(module, source, torch.Generator().manual_seed(0))
    xs, _ = module.standardise(*source.batch(0))
    xs = xs / xs.norm(dim=-1, keepdim=True)
    for layer in range(3):
        cosine = module.W_enc[layer] @ xs[layer].T  # [F, tokens]
        torch.testing.assert_close(module.W_enc[layer].norm(dim=-1), torch.ones(32))
        assert cosine.max(dim=1).values.min() > 1 - 1e-5  # every row is one of the batch's tokens


def test_auxk_and_data_init_train_and_export(tmp_path, corpus):
    config = tiny_config(kind="skip-plt", activation="batchtopk", k=4, encoder_init="data", auxk=8,
                         dead_tokens=200, checkpoint_every=1000)  # fmt: skip
    result = train_transcoders(config, tiny_source(corpus, config), tmp_path / "out", progress=False)
    assert result.curves[-1]["mse"] < 0.7 * result.curves[0]["mse"]
    assert any(c["auxk"] is not None for c in result.curves)  # some features died and were fed
    assert result.report["eval"]["l0_mean"] <= 2 * config.k  # the exported JumpReLU threshold is set


def test_resume_accepts_a_checkpoint_older_than_new_default_fields():
    from pathlib import Path

    from tracewire.errors import InvalidArgumentError
    from tracewire.training.trainer import _check_resumable

    config = tiny_config()
    saved = {k: v for k, v in config.to_dict().items() if k not in ("auxk", "auxk_coef", "encoder_init")}
    _check_resumable(saved, config, 1, Path("ckpt"))
    with pytest.raises(InvalidArgumentError, match="auxk"):
        _check_resumable(saved, config.replace(kind="skip-plt", activation="topk", k=2, auxk=4), 1, Path("c"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_init": "pca"}, "encoder_init must be 'random' or 'data'"),
        ({"auxk": 4}, "auxk must be >= 0 and is for per-layer topk / batchtopk"),  # relu
        ({"kind": "clt", "activation": "topk", "k": 2, "auxk": 4}, "kind 'clt'"),
        ({"activation": "topk", "k": 2, "auxk": -1}, "got auxk=-1"),
    ],
)
def test_config_refuses_bad_auxk_and_init(changes, message):
    from tracewire.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        tiny_config(**changes)
