"""Must-show 1: on data with known sparse features the trainer recovers them (mean max-cosine > 0.9)."""

from __future__ import annotations

import pytest

from tests.training.synthetic_task import SparseFeatureTask, mean_max_cosine
from tracewire.training import TrainConfig, train_transcoders


@pytest.mark.parametrize(("kind", "activation", "k"), [("plt", "jumprelu", None), ("clt", "topk", 3)])
def test_recovers_ground_truth_features(tmp_path, kind, activation, k):
    task = SparseFeatureTask(kind, n_layers=2, d_model=16, n_true=24, p_active=0.05, batch_tokens=512)
    config = TrainConfig(kind=kind, activation=activation, k=k, features=48, tokens=512 * 800, seq_len=2,
                         batch_windows=512, lr=3e-3, sparsity_coef=0.1, checkpoint_every=10**6, log_every=50,
                         stats_batches=2, eval_windows=1)  # fmt: skip
    result = train_transcoders(config, task, tmp_path, progress=False)
    module = result.module
    for layer in range(task.n_layers):
        learned = (
            module.W_dec_clt[layer].detach().flatten(1) if kind == "clt" else module.W_dec[layer].detach()
        )
        score = mean_max_cosine(learned, task.true_decoders(layer))
        assert score > 0.9, f"layer {layer}: mean max-cosine {score:.3f}"
    assert result.report["eval"]["nmse_mean"] < 0.2
