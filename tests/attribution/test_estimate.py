"""The memory/time estimator: structure and monotonicity (accuracy is checked by the benchmark)."""

from __future__ import annotations

from tests.factories.models import tiny_model
from tracewire.attribution.estimate import active_per_token, estimate_attribution
from tracewire.transcoders.synthetic import random_plt


def test_estimate_grows_with_prompt_and_budget() -> None:
    lm = tiny_model("llama")
    ts = random_plt(3, lm.d_model, 32, activation="relu")
    active = active_per_token(lm, ts)
    assert 0 < active <= 32
    small = estimate_attribution(lm, ts, n_tokens=16, max_feature_nodes=64, active=active)
    long = estimate_attribution(lm, ts, n_tokens=1024, max_feature_nodes=64, active=active)
    wide = estimate_attribution(lm, ts, n_tokens=16, max_feature_nodes=None, active=active)
    assert long.peak_bytes > small.peak_bytes and long.seconds > small.seconds
    assert wide.n_rows >= small.n_rows
    assert small.n_active_features == int(active * 3 * 15)
    text = long.summary()
    assert "GiB" in text and "stored edges" in text
