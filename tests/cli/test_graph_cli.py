"""`tracewire prune` and `tracewire scores` on a random graph saved to a temporary folder."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.graph.factory import random_graph
from tracewire.cli.main import app
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import neuronpedia_schema
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.graph.pruning import prune_graph
from tracewire.graph.scores import graph_scores, subgraph_scores

runner = CliRunner()
_SCORES = re.compile(r"^(?P<what>[^:\n]+): replacement (?P<r>[0-9.]+), completeness (?P<c>[0-9.]+)$", re.M)


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, Path]:
    graph = random_graph(n_layers=3, n_pos=5, n_features=40, n_targets=3, edge_density=0.3, seed=4)
    path = tmp_path_factory.mktemp("graph") / "demo.safetensors"
    graph.save(path)
    return graph, path


def _plain(output: str) -> str:
    """Output with rich's error box and line wrapping removed, for substring checks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _scores(output: str) -> dict[str, tuple[float, float]]:
    return {m["what"]: (float(m["r"]), float(m["c"])) for m in _SCORES.finditer(output)}


def test_commands_are_listed() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "prune" in result.output and "scores" in result.output


def test_prune_writes_valid_json_and_reports(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    graph, path = graph_file
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["prune", str(path), "--node-threshold", "0.7", "--edge-threshold", "0.9", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = prune_graph(graph, 0.7, 0.9)
    kept_nodes, kept_edges = int(expected.node_mask.sum()), int(expected.edge_mask.sum())
    assert f"kept {kept_nodes} of {graph.n_nodes} nodes" in result.output
    assert f"{kept_edges} of {graph.n_edges} edges" in result.output
    printed = _scores(result.output)
    full, pruned = graph_scores(graph), subgraph_scores(graph, expected.node_mask)
    assert printed["full graph"] == pytest.approx((full.replacement, full.completeness), abs=6e-5)
    assert printed["pruned graph"] == pytest.approx((pruned.replacement, pruned.completeness), abs=6e-5)

    document = json.loads((out / "demo.json").read_text())
    jsonschema.Draft7Validator(neuronpedia_schema()).validate(document)
    assert len(document["nodes"]) == kept_nodes and len(document["links"]) == kept_edges
    assert document["metadata"]["slug"] == "demo"
    listing = json.loads((out / "graph-metadata.json").read_text())
    assert [entry["slug"] for entry in listing["graphs"]] == ["demo"]


def test_prune_gzip_and_slug(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    _, path = graph_file
    result = runner.invoke(app, ["prune", str(path), "--json", str(tmp_path), "--slug", "my-graph", "--gzip"])
    assert result.exit_code == 0, result.output
    document = json.loads(gzip.decompress((tmp_path / "my-graph.json.gz").read_bytes()))
    assert document["metadata"]["slug"] == "my-graph"
    assert not (tmp_path / "my-graph.json").exists()


def test_prune_without_json_writes_nothing(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    _, path = graph_file
    result = runner.invoke(app, ["prune", str(path)], catch_exceptions=False)
    assert result.exit_code == 0
    assert "nothing written" in result.output
    assert list(path.parent.iterdir()) == [path]
    misuse = runner.invoke(app, ["prune", str(path), "--gzip"])
    assert misuse.exit_code == 2 and "--json" in _plain(misuse.output)


def test_prune_rejects_bad_thresholds_and_slugs(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    _, path = graph_file
    result = runner.invoke(app, ["prune", str(path), "--node-threshold", "1.5"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["prune", str(path), "--json", str(tmp_path), "--slug", "../escape"])
    assert result.exit_code == 2
    assert "slug" in _plain(result.output) and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_prune_labels_from_feature_store(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    dashboards = pytest.importorskip("tracewire.dashboards")
    graph, path = graph_file
    kept = prune_graph(graph).node_mask[: graph.n_features]
    layer, _, feature = graph.features[int(kept.nonzero()[0, 0])].tolist()
    with dashboards.FeatureStore(tmp_path / "features.sqlite") as store:
        store.set_label(layer, feature, "says France")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["prune", str(path), "--json", str(out), "--features", str(tmp_path / "features.sqlite")]
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "demo.json").read_text())
    labelled = [node for node in document["nodes"] if node["clerp"] == "says France"]
    assert labelled and all(node["layer"] == str(layer) for node in labelled)


def test_prune_without_dashboards_skips_labels(
    graph_file: tuple[Graph, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = graph_file
    monkeypatch.setitem(sys.modules, "tracewire.dashboards", None)  # import now raises ImportError
    result = runner.invoke(app, ["prune", str(path), "--json", str(tmp_path), "--features", "x.sqlite"])
    assert result.exit_code == 0, result.output
    assert "--features ignored" in result.output
    assert (tmp_path / "demo.json").is_file()


def test_scores_of_full_graph(graph_file: tuple[Graph, Path]) -> None:
    graph, path = graph_file
    result = runner.invoke(app, ["scores", str(path)])
    assert result.exit_code == 0, result.output
    full = graph_scores(graph)
    assert _scores(result.output)["full graph"] == pytest.approx(
        (full.replacement, full.completeness), abs=6e-5
    )
    assert "subgraph" not in result.output


def test_scores_of_subgraph_by_ids_and_indices(graph_file: tuple[Graph, Path]) -> None:
    graph, path = graph_file
    ids = node_ids(graph)
    chosen = [0, 3, 7, 12]
    # Ids after --subgraph, a repeated option, an index, and a non-feature node (a token).
    subset = ["--subgraph", ids[0], ids[3], "-s", ids[7], "12", str(graph.token_offset)]
    result = runner.invoke(app, ["scores", str(path), *subset])
    assert result.exit_code == 0, result.output
    expected = subgraph_scores(graph, chosen)
    printed = _scores(result.output)
    assert printed[f"subgraph (4 of {graph.n_features} features)"] == pytest.approx(
        (expected.replacement, expected.completeness), abs=6e-5
    )
    assert "1 non-feature node" in result.output


def test_scores_reject_unknown_nodes(graph_file: tuple[Graph, Path]) -> None:
    graph, path = graph_file
    result = runner.invoke(app, ["scores", str(path), "--subgraph", "99_99_99"])
    assert result.exit_code == 2
    assert "99_99_99" in _plain(result.output) and "node id" in _plain(result.output)
    result = runner.invoke(app, ["scores", str(path), "--subgraph", str(graph.n_nodes)])
    assert result.exit_code == 2 and "outside" in _plain(result.output)


def test_scores_read_exported_json(graph_file: tuple[Graph, Path], tmp_path: Path) -> None:
    _, path = graph_file
    assert runner.invoke(app, ["prune", str(path), "--json", str(tmp_path)]).exit_code == 0
    exported = tmp_path / "demo.json"
    first_feature = next(node["node_id"] for node in json.loads(exported.read_text())["nodes"])
    result = runner.invoke(app, ["scores", str(exported), "--subgraph", first_feature])
    assert result.exit_code == 0, result.output
    assert "subgraph (1 of" in result.output
    before = exported.read_bytes()
    result = runner.invoke(app, ["prune", str(exported), "--json", str(tmp_path)])  # same slug, same file
    assert result.exit_code == 2 and "replace" in _plain(result.output)
    assert exported.read_bytes() == before
    result = runner.invoke(app, ["prune", str(exported), "--json", str(tmp_path), "--slug", "again"])
    assert result.exit_code == 0, result.output


def test_bad_graph_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scores", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2 and "does not exist" in _plain(result.output)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a graph")
    result = runner.invoke(app, ["prune", str(corrupt)])
    assert result.exit_code == 2
    assert "error:" in result.output and "corrupt.safetensors" in result.output
