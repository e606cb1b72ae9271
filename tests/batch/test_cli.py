"""``tracewire batch attribute``, ``compare`` and ``aggregate`` end to end, on files the CLI wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.batch.assets import PROMPTS, save_tiny_assets, write_prompts
from tracewire.batch.ray_cluster import require_ray
from tracewire.cli.main import app
from tracewire.errors import MissingExtraError
from tracewire.graph.compare import compare_graphs
from tracewire.graph.graph import Graph

runner = CliRunner()


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch-cli")
    settings = save_tiny_assets(root)
    prompts = write_prompts(root / "prompts.txt", PROMPTS[:4])
    args = ["batch", "attribute", str(prompts), "-o", str(root / "out"), "-m", settings.model]
    args += ["-t", settings.transcoders, "--threads", "1", "--max-n-logits", "3", "--batch-size", "8", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 graphs written, 0 already there, 0 failed" in result.output
    again = runner.invoke(app, args)
    assert "0 graphs written, 4 already there" in again.output
    return root / "out"


def test_compare_cli_prints_and_writes_the_ranking(batch_dir: Path, tmp_path: Path) -> None:
    graphs = sorted((batch_dir / "graphs").glob("*.safetensors"))
    a, b = graphs[0], graphs[3]  # "The capital of France is" vs "Austin is"
    result = runner.invoke(app, ["compare", str(a), str(b), "--json", str(tmp_path / "diff.json")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "diff.json").read_text())
    expected = compare_graphs(Graph.load(a), Graph.load(b))
    assert written["alignment"] == expected.alignment == "end"  # 6 vs 3 tokens
    assert [d["description"] for d in written["ranked"]] == [d.description for d in expected.ranked]
    assert expected.ranked[0].description in result.output


def test_aggregate_cli_writes_a_graph_the_explorer_can_load(batch_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "circuit.safetensors"
    result = runner.invoke(app, ["aggregate", str(batch_dir), "-o", str(out), "--min-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    graph = Graph.load(out)
    index = json.loads((batch_dir / "index.json").read_text())
    assert graph.metadata["aggregate"]["graphs"] == [Path(g["graph"]).stem for g in index["graphs"]]
    features = json.loads((tmp_path / "circuit.features.json").read_text())
    every = {
        (layer, f)
        for g in index["graphs"]
        for layer, _, f in Graph.load(batch_dir / g["graph"]).features.tolist()
    }
    assert {tuple(map(int, key.split(":"))) for key in features["features"]} == every
    common = json.loads((tmp_path / "circuit.common.json").read_text())
    assert all(feature["count"] >= 2 for feature in common["features"])

    from tracewire.graph.neuronpedia import to_neuronpedia_json

    assert to_neuronpedia_json(graph, slug="aggregate")["nodes"]  # exports like any graph


def test_workers_without_ray_is_a_clear_error(batch_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'tracewire\[ray\]'"):
        require_ray()
    prompts = batch_dir.parent / "prompts.txt"
    model, tc = batch_dir.parent / "model", batch_dir.parent / "tc"
    result = runner.invoke(
        app,
        ["batch", "attribute", str(prompts), "-o", str(batch_dir.parent / "o2"), "-m", str(model),
         "-t", str(tc), "--workers", "2", "-q"],
    )  # fmt: skip
    assert result.exit_code == 2 and "tracewire[ray]" in result.output
