"""``tracewire dashboards`` / ``dashboards export`` / ``feature`` end to end on the token-feature model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.dashboards.conftest import CONFIG
from tracewire.cli.main import app
from tracewire.dashboards import FeatureStore
from tracewire.dashboards.card import cantor_pair
from tracewire.transcoders import save_transcoders


def test_build_print_label_and_export(token_setup, corpus, tmp_path: Path):
    loaded, transcoders = token_setup
    model_dir, tc_dir = tmp_path / "model", tmp_path / "tc"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    save_transcoders(transcoders, tc_dir)
    store = tmp_path / "features.sqlite"
    runner = CliRunner()
    args = ["dashboards", "-o", str(store), "-m", str(model_dir), "-t", str(tc_dir),
            "--corpus", str(corpus.directory), "--tokens", "600", "--seq-len", str(CONFIG.seq_len),
            "--batch-windows", "4", "--top", "4", "--quantiles", "2", "--per-quantile", "2",
            "--context-before", "4", "--context-after", "2", "--features", "0:10-19,1:5",
            "--quiet"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "11 cards written" in result.output
    with FeatureStore(store, readonly=True) as feature_store:
        assert feature_store.features() == [(0, f) for f in range(10, 20)] + [(1, 5)]
        assert feature_store.meta["build"]["model"] == str(model_dir)

    result = runner.invoke(app, ["feature", "0", "12", "--store", str(store), "--no-color"])
    assert result.exit_code == 0, result.output
    assert "layer 0 feature 12" in result.output and "[[w12]]" in result.output

    result = runner.invoke(app, ["feature", "0", "12", "-s", str(store), "--label", "twelve", "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["label"] == "twelve" and card["user_label"] == "twelve" and card["auto_label"] != "twelve"

    result = runner.invoke(app, ["feature", "0", "50", "-s", str(store)])
    assert result.exit_code == 1 and "no card for layer 0 feature 50" in result.output

    out = tmp_path / "features"
    result = runner.invoke(app, ["dashboards", "export", "--store", str(store), "-o", str(out), "--all"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{cantor_pair(layer, f)}.json" for layer, f in [(0, f) for f in range(10, 20)] + [(1, 5)]
    )

    # no transcoders: the embedded model has its shipped set; any other model must name a set
    result = runner.invoke(app, ["dashboards", "-o", str(store), "-m", "google/gemma-2-2b"])
    assert result.exit_code == 2 and "--transcoders is needed" in result.output
    result = runner.invoke(app, ["feature", "0", "1", "--store", str(tmp_path / "nope.sqlite")])
    assert result.exit_code == 2 and "no feature store there" in result.output
