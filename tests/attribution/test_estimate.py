"""The memory/time estimator: structure and monotonicity (accuracy is checked by the benchmark)."""

from __future__ import annotations

import pytest

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
    assert "GiB" in text and "stored rows" in text


def test_estimate_on_a_prompt_measures_its_own_activity_and_targets() -> None:
    import torch

    from tracewire.attribution.engine import attribute
    from tracewire.replacement.model import ReplacementModel

    lm = tiny_model("llama")
    ts = random_plt(3, lm.d_model, 32, activation="relu")
    ids = torch.tensor([0, 5, 9, 13, 2, 7, 21, 4])
    est = estimate_attribution(lm, ts, prompt=ids, max_feature_nodes=16, max_n_logits=3)
    graph = attribute(ids, ReplacementModel(lm, ts), max_feature_nodes=16, max_n_logits=3, progress=False)
    # the prompt's own active features (position 0 is BOS, not counted) and salient logits
    assert est.n_active_features == graph.metadata["n_active_features"]
    assert est.n_rows == graph.n_targets + 16
    assert est.seconds_low == est.seconds
    by_length = estimate_attribution(lm, ts, n_tokens=8, max_feature_nodes=16, max_n_logits=3)
    assert by_length.seconds_low <= by_length.seconds
    with pytest.raises(ValueError, match="n_tokens or prompt"):
        estimate_attribution(lm, ts, max_feature_nodes=16)
