"""``tracewire intervene`` and ``tracewire evaluate`` end to end on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.interventions.setups import setup
from tracewire.attribution.engine import attribute
from tracewire.cli.main import app
from tracewire.transcoders.io import save_transcoders


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lm, ts = setup("llama", "plt", "relu")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    save_transcoders(ts, root / "tc")
    return root, lm, ts


def test_intervene_prints_before_after_and_generations(saved) -> None:
    root, _, _ = saved
    args = ["intervene", "The capital of France is", "-m", str(root / "model"), "-t", str(root / "tc")]
    result = CliRunner().invoke(
        app, [*args, "--set", "1:-1:3=8", "--scale", "0:2::5=0", "--ablate", "2:4:1", "--generate", "4"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "L1 @pos -1 f3 set 8" in out and "L0 @pos 2: f5 scale 0" in out
    assert "next token" in out and "before" in out and "after" in out
    assert "generation before:" in out and "generation after:" in out


def test_intervene_reports_bad_input_in_one_line(saved) -> None:
    root, _, _ = saved
    base = ["intervene", "The capital", "-m", str(root / "model"), "-t", str(root / "tc")]
    bad = CliRunner().invoke(app, [*base, "--set", "1:99:3=8"])
    assert bad.exit_code == 2 and "position 99 is outside" in bad.output
    bad = CliRunner().invoke(app, [*base, "--set", "1:3=8"])
    assert bad.exit_code == 2 and "LAYER:POSITION:FEATURE=VALUE" in bad.output
    none = CliRunner().invoke(app, base)
    assert none.exit_code == 2 and "no interventions given" in none.output


def test_evaluate_writes_json_and_png(saved) -> None:
    root, lm, ts = saved
    graph = attribute("The capital of France is", lm, ts, progress=False)
    graph.metadata["model"] = str(root / "model")
    graph.save(root / "g.safetensors")
    result = CliRunner().invoke(
        app, ["evaluate", str(root / "g.safetensors"), "-t", str(root / "tc"), "--k", "3", "--random", "2"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((root / "g.faithfulness.json").read_text())
    assert len(report["ablations"]) == 5
    assert report["summary"]["frozen_constrained"]["all"]["max_abs_error"] < 1e-5
    assert (root / "g.faithfulness.png").stat().st_size > 1000
    assert "frozen_constrained" in result.output and "areas over node budgets" in result.output
