"""`tracewire demo --fast --no-serve`: the README's main job at CI size (slow: ~3 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from tracewire.cli.main import app
from tracewire.graph.neuronpedia import neuronpedia_schema

pytestmark = pytest.mark.slow


def test_demo_fast_writes_valid_graphs_and_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--fast", "--no-serve", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["graphs"]) == {"capital-france", "opposite-hot", "eiffel-city", "counting"}
    schema = neuronpedia_schema()
    for slug, row in report["graphs"].items():
        document = json.loads((out / "graphs" / f"{slug}.json").read_text())
        jsonschema.validate(document, schema)
        assert 0.0 <= row["replacement"] <= 1.0 and 0.0 <= row["completeness"] <= 1.0
        assert row["faithfulness"]["frozen_constrained"]["correlation"] > 0.99
        assert (out / "graphs" / f"{slug}.safetensors").exists()
        reading = row["reading"]
        assert reading["target"] == row["targets"][0]["token"]
        for group in reading["groups"] + reading["refuted"]:  # each was ablated in both settings
            assert group["p_clean"] == pytest.approx(row["targets"][0]["p"], abs=1e-3)
            assert 0.0 <= group["p_replacement"] <= 1.0 and 0.0 <= group["p_model"] <= 1.0
            assert group["confirmed"] == (group["p_replacement"] < group["p_clean"] > group["p_model"])
        assert all(g["confirmed"] for g in reading["groups"])
        assert not any(g["confirmed"] for g in reading["refuted"])
        if reading["groups"] or reading["refuted"]:
            assert reading["text"] in result.output
    assert report["graphs"]["capital-france"]["targets"][0]["token"] == " Paris"
    metadata = json.loads((out / "graphs" / "graph-metadata.json").read_text())
    assert len(metadata["graphs"]) == 4
    assert "capital-france" in result.output
