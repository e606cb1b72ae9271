"""``export_html`` / ``tracewire export-html``: what goes into the file, its size and the pruning."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.graph.factory import random_graph
from tracewire.cli.main import app
from tracewire.dashboards import FeatureStore
from tracewire.errors import InvalidArgumentError
from tracewire.export import export_html
from tracewire.export.standalone import (
    CARD_WINDOW_AFTER,
    CARD_WINDOW_BEFORE,
    CONTENT_SECURITY_POLICY,
    MODULE_PREFIX,
)
from tracewire.graph import Graph, keep_all, prune_graph, write_graph_files
from tracewire.graph.neuronpedia import FEATURE_TYPE
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server.ui_routes import static_files


def embedded(page: str) -> dict[str, Any]:
    """The recorded API data of a standalone page."""
    match = re.search(
        r'<script id="tracewire-offline-data" type="application/octet-stream">([^<]*)</script>', page
    )
    assert match, "no embedded data"
    data: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(match.group(1))))
    return data


def import_map(page: str) -> dict[str, str]:
    match = re.search(r'<script type="importmap">(.*?)</script>', page, re.S)
    assert match
    imports: dict[str, str] = json.loads(match.group(1))["imports"]
    return imports


def test_cli_writes_one_file_with_the_pruned_graph_and_its_cards(attributed: dict[str, Path], tmp_path: Path):
    out = tmp_path / "texas.html"
    result = CliRunner().invoke(
        app, ["export-html", str(attributed["graph"]), "-o", str(out), "--features", str(attributed["store"])]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    size = out.stat().st_size
    assert f"{size / 1e6:.2f} MB" in result.output
    assert "node threshold 0.8" in result.output

    data = embedded(page)
    head = data["responses"]["/api/graphs/texas/nodes"]
    graph = Graph.load(attributed["graph"])
    prune = prune_graph(graph, 0.8, 0.98)
    ids = node_ids(graph)
    kept = {ids[i] for i in prune.node_mask.nonzero().flatten().tolist()}
    assert {node["node_id"] for node in head["nodes"]} == kept
    assert f"{len(kept)} nodes" in result.output
    links = data["links"]["texas"]
    assert len(links["source"]) == len(links["target"]) == len(links["weight"]) == int(prune.edge_mask.sum())

    # every feature node's card, as the store has it (lists cut to what the explorer shows)
    with FeatureStore(attributed["store"], readonly=True) as store:
        features = {
            tuple(int(p) for p in n["node_id"].split("_")[:2])
            for n in head["nodes"]
            if n["feature_type"] == FEATURE_TYPE
        }
        assert features
        for layer, feature in features:
            card = data["responses"][f"/api/features/{layer}/{feature}"]
            expected = store.card(layer, feature)
            assert expected is not None
            assert card["top_logits"] == expected.to_json()["top_logits"][: len(card["top_logits"])]
            assert card["act_max"] == pytest.approx(expected.to_json()["act_max"])
            # example windows cut around their centre token, which stays the centre
            for mine, theirs in zip(card["top_examples"], expected.to_json()["top_examples"], strict=True):
                assert mine["tokens"][mine["train_token_ind"]] == theirs["tokens"][theirs["train_token_ind"]]
                assert len(mine["tokens"]) <= CARD_WINDOW_BEFORE + 1 + CARD_WINDOW_AFTER
    assert data["responses"]["/api/info"]["features"] is True
    assert data["responses"]["/api/info"]["read_only"] is True

    # the explorer's own files, read from the package now: each module, imports rewritten
    files = static_files()
    modules = import_map(page)
    assert set(modules) == {MODULE_PREFIX + name for name in files if name.endswith(".js")}
    app_js = base64.b64decode(modules[MODULE_PREFIX + "js/app.js"].split(",", 1)[1]).decode()
    assert f'from "{MODULE_PREFIX}js/api.js"' in app_js and 'from "./' not in app_js
    assert files["app.css"][0].decode() in page
    assert CONTENT_SECURITY_POLICY in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page references the network"


def test_pruning_is_lowered_until_the_file_fits_its_budget(tmp_path: Path):
    graph = random_graph(n_layers=6, n_pos=8, n_features=1500, n_targets=5, edge_density=0.05, seed=3)
    default = export_html(graph, tmp_path / "a.html")
    at_half = export_html(graph, tmp_path / "half.html", node_threshold=0.5)
    at_six = export_html(graph, tmp_path / "six.html", node_threshold=0.6)
    assert default.node_threshold == 0.8 and default.n_bytes > at_six.n_bytes > at_half.n_bytes
    small = export_html(graph, tmp_path / "b.html", max_bytes=at_half.n_bytes)
    assert small.node_threshold == 0.5 and small.n_nodes == at_half.n_nodes
    assert (tmp_path / "b.html").stat().st_size == small.n_bytes <= at_half.n_bytes
    fixed = export_html(graph, tmp_path / "c.html", node_threshold=0.8, max_bytes=at_half.n_bytes)
    assert fixed.node_threshold == 0.8 and fixed.n_bytes == default.n_bytes  # an explicit threshold is kept


def test_2k_node_graph_stays_under_5_mb(tmp_path: Path):
    graph = random_graph(n_layers=12, n_pos=12, n_features=2000, n_targets=10, edge_density=0.01, seed=1)
    result = export_html(graph, tmp_path / "big.html", node_threshold=1.0, edge_threshold=1.0)
    assert result.n_nodes >= 2000
    assert result.n_bytes < 5 * 1024 * 1024, result.summary()


def test_neuronpedia_json_input_keeps_all_its_nodes(tmp_path: Path):
    graph = random_graph(n_layers=3, n_pos=5, n_features=40, n_targets=3, seed=2)
    json_path = write_graph_files(graph, "small", tmp_path, prune=keep_all(graph))
    result = export_html(json_path, tmp_path / "small.html")
    document = json.loads(json_path.read_text())
    assert result.n_nodes == len(document["nodes"]) and result.n_links == len(document["links"])
    assert result.node_threshold is None and result.edge_threshold is None
    data = embedded((tmp_path / "small.html").read_text())
    assert data["responses"]["/api/graphs"]["graphs"][0]["slug"] == "small"


def test_bad_input_is_refused_with_the_path(tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match=r"missing\.safetensors does not exist"):
        export_html(tmp_path / "missing.safetensors", tmp_path / "x.html")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InvalidArgumentError, match=r"notes\.txt: expected a graph file"):
        export_html(tmp_path / "notes.txt", tmp_path / "x.html")
    graph = random_graph(n_layers=2, n_pos=3, n_features=10, n_targets=2, seed=0)
    with pytest.raises(InvalidArgumentError, match="node_threshold must be in"):
        export_html(graph, tmp_path / "x.html", node_threshold=1.5)
    result = CliRunner().invoke(
        app, ["export-html", str(tmp_path / "nope.json"), "-o", str(tmp_path / "x.html")]
    )
    assert result.exit_code == 2 and "nope.json does not exist" in result.output
    assert not (tmp_path / "x.html").exists()
