"""The graph file's attention section, and `tracewire qk` / `tracewire heads` on files the CLI reads."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.attention.factory import traced
from tests.factories.models import random_ids, tiny_model
from tracewire.attention import (
    TraceContext,
    head_loadings,
    qk_attribution,
    store_loadings,
    store_qk,
    stored_loadings,
    stored_qk,
)
from tracewire.attribution.engine import attribute
from tracewire.cli.main import app
from tracewire.graph.graph import Graph
from tracewire.graph.pruning import prune_graph, subgraph
from tracewire.transcoders.io import save_transcoders
from tracewire.transcoders.synthetic import random_plt


def test_section_round_trips_and_goes_stale_on_a_derived_graph(tmp_path) -> None:
    rm, full = traced("qwen3")
    graph = subgraph(full, prune_graph(full, 0.8, 0.98))  # on demand: a pruned graph's edges
    ctx = TraceContext.build(graph, rm)
    loadings = head_loadings(graph, ctx, progress=False)
    assert torch.allclose(loadings.total, graph.edge_weights, atol=1e-5, rtol=1e-4)
    store_loadings(graph, loadings)
    store_qk(graph, qk_attribution(graph, ctx, layer=1, head=2, query=4, top_k=2))
    assert full.sections == {} and "attention" not in full.metadata  # the parent graph is untouched
    graph.save(tmp_path / "g.safetensors")
    back = Graph.load(tmp_path / "g.safetensors")
    again = stored_loadings(back)
    assert again is not None and torch.equal(again.heads, loadings.heads)
    assert torch.equal(again.targets, graph.edge_targets) and torch.equal(again.sources, graph.edge_sources)
    entries = stored_qk(back)
    assert [(e["layer"], e["head"], e["query"]) for e in entries] == [(1, 2, 4)] * 2
    # the same (layer, head, query, key) stored again replaces, a new one adds
    store_qk(back, qk_attribution(graph, ctx, layer=1, head=2, query=4, keys=[entries[0]["key"], 0]))
    keys = sorted(e["key"] for e in stored_qk(back))
    assert keys == sorted({e["key"] for e in entries} | {0})
    # a graph pruned further no longer matches its section: reported as absent, not misread
    smaller = subgraph(back, prune_graph(back, 0.5, 0.9))
    assert stored_loadings(smaller) is None and stored_qk(smaller) == []


def test_graph_files_without_the_section_still_load(tmp_path) -> None:
    _, graph = traced("llama")
    graph.save(tmp_path / "plain.safetensors")
    back = Graph.load(tmp_path / "plain.safetensors")
    assert back.sections == {} and stored_loadings(back) is None and stored_qk(back) == []


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("qk-cli")
    lm = tiny_model("llama", seed=5)
    ts = random_plt(3, lm.d_model, 16, activation="relu", skip=True, seed=5)
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    save_transcoders(ts, root / "tc")
    graph = attribute(random_ids(5, seed=6), lm, ts, progress=False)
    graph.metadata["model"] = str(root / "model")
    graph.save(root / "g.safetensors")
    return root, graph


def test_qk_command_prints_saves_and_writes_json(saved) -> None:
    root, _ = saved
    path = str(root / "g.safetensors")
    args = ["qk", path, "-t", str(root / "tc"), "--layer", "2", "--head", "1", "--query", "-1"]
    result = CliRunner().invoke(
        app, [*args, "--key", "3", "--key", "1", "--save", "--json", str(root / "qk.json")]
    )
    assert result.exit_code == 0, result.output
    assert "layer 2 head 1 (reads kv head 0)" in result.output and "top pairs" in result.output
    written = json.loads((root / "qk.json").read_text())
    assert [entry["key"] for entry in written] == [3, 1]
    for entry in written:  # pairs + constants = score, as printed
        assert entry["pair_total"] + sum(entry["constants"].values()) == pytest.approx(
            entry["score"], abs=1e-5
        )
    assert len(stored_qk(Graph.load(path))) == 2
    bad = CliRunner().invoke(app, [*args[:-2], "--query", "9"])
    assert bad.exit_code == 2 and "query position 9" in bad.output


def test_heads_command_splits_edges_and_stores_them(saved) -> None:
    root, graph = saved
    path = str(root / "g.safetensors")
    t, s = int(graph.edge_targets[0]), int(graph.edge_sources[0])
    result = CliRunner().invoke(app, ["heads", path, "-t", str(root / "tc"), "--edge", f"{t}:{s}", "--save"])
    assert result.exit_code == 0, result.output
    assert f"edge {s} -> {t}: {float(graph.edge_weights[0]):+.4g} = direct" in result.output
    stored = stored_loadings(Graph.load(path))
    assert stored is not None and float(stored.total[0]) == pytest.approx(
        float(graph.edge_weights[0]), abs=1e-5
    )
    bad = CliRunner().invoke(app, ["heads", path, "-t", str(root / "tc"), "--edge", "0:999999"])
    assert bad.exit_code == 2 and "no edge from node 999999" in bad.output
