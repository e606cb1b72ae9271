"""Neuronpedia JSON export and import: schema, ids, determinism, files on disk, round trips."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from tests.graph.factory import hand_built_graph, random_graph
from tracewire.errors import GraphFormatError
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import (
    DEFAULT_Q_PARAMS,
    dumps,
    from_neuronpedia_json,
    neuronpedia_schema,
    to_neuronpedia_json,
    write_graph_files,
)
from tracewire.graph.neuronpedia_ids import (
    cantor_pair,
    cantor_unpair,
    error_node_id,
    feature_node_id,
    node_ids,
    scan_name,
)
from tracewire.graph.pruning import keep_all, prune_graph

REFERENCE_SCHEMA = Path("/work/shared/reference/neuronpedia-graph-schema.json")


def _validate(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(neuronpedia_schema()).validate(document)


def test_packaged_schema_is_the_reference_schema() -> None:
    if REFERENCE_SCHEMA.exists():
        assert neuronpedia_schema() == json.loads(REFERENCE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(neuronpedia_schema())


@pytest.mark.parametrize("seed", range(3))
def test_export_validates_against_schema(seed: int) -> None:
    graph = random_graph(n_layers=3, n_pos=5, n_features=40, n_targets=3, n_custom_targets=1, seed=seed)
    document = to_neuronpedia_json(graph, f"graph-{seed}")
    _validate(document)
    _validate(json.loads(dumps(document)))
    kinds = {node["feature_type"] for node in document["nodes"]}
    assert {"embedding", "logit"} <= kinds


def test_node_fields() -> None:
    graph = hand_built_graph()
    labels = {(0, 11): "says hello"}
    document = to_neuronpedia_json(graph, "hand", prune=keep_all(graph), feature_labels=labels)
    by_id = {node["node_id"]: node for node in document["nodes"]}
    feature = by_id["0_11_0"]
    assert feature["feature"] == cantor_pair(0, 11)
    assert feature["layer"] == "0" and feature["ctx_idx"] == 0
    assert feature["feature_type"] == "cross layer transcoder"
    assert feature["jsNodeId"] == "0_11-0"
    assert feature["clerp"] == "says hello"
    assert feature["activation"] == 1.0
    error = by_id["0_-1_1"]
    assert (error["feature"], error["feature_type"], error["activation"]) == (
        -1,
        "mlp reconstruction error",
        None,
    )
    embedding = by_id["E_8_1"]
    assert (embedding["feature"], embedding["layer"], embedding["feature_type"]) == (1, "E", "embedding")
    logit = by_id["2_9_1"]  # n_layers + 1 = 2, vocab 9, last position 1
    assert logit["feature"] == 9 and logit["layer"] == "2" and logit["feature_type"] == "logit"
    assert logit["is_target_logit"] is True and logit["token_prob"] == 0.5
    assert logit["clerp"] == 'Output "c" (p=0.500)'
    # err(0,0) has no edges at all: left out; embeddings and logits always shown.
    assert "0_-1_0" not in by_id and "E_7_0" in by_id
    links = {(link["source"], link["target"]): link["weight"] for link in document["links"]}
    assert links[("E_8_1", "0_12_1")] == -3.0
    assert links[("0_12_1", "2_9_1")] == -1.0


def test_influence_is_cumulative_score() -> None:
    graph = hand_built_graph()
    result = prune_graph(graph)
    document = to_neuronpedia_json(graph, "hand", prune=result)
    by_id = {node["node_id"]: node for node in document["nodes"]}
    assert by_id["0_11_0"]["influence"] == pytest.approx(float(result.cumulative_scores[0]))
    assert "0_12_1" not in by_id  # pruned


def test_node_ids_are_unique_where_the_old_scheme_collides() -> None:
    # Feature 2 of layer 0 at pos 1 and the error node of layer 2 at pos 1: circuit-tracer's old
    # error id "0_{layer}_{pos}" = "0_2_1" equals the feature's id.
    graph = random_graph(n_layers=3, n_pos=2, n_features=0, n_targets=1, seed=1)
    features = torch.tensor([[0, 1, 2]])
    # The new feature is node 0, so every other node (and so every edge end) moves up by one.
    graph = replace(graph, features=features, activations=torch.ones(1),
                    edge_targets=graph.edge_targets + 1, edge_sources=graph.edge_sources + 1)  # fmt: skip
    ids = node_ids(graph)
    assert len(set(ids)) == len(ids)
    old_error_id = f"0_{2}_{1}"
    assert feature_node_id(0, 2, 1) == old_error_id != error_node_id(2, 1)
    document = to_neuronpedia_json(graph, "ids", prune=keep_all(graph))
    assert len({node["node_id"] for node in document["nodes"]}) == len(document["nodes"])


def test_import_refuses_colliding_ids() -> None:
    graph = hand_built_graph()
    document = to_neuronpedia_json(graph, "hand", prune=keep_all(graph))
    for node in document["nodes"]:
        if node["feature_type"] == "mlp reconstruction error":
            node["node_id"] = document["nodes"][0]["node_id"]
    with pytest.raises(GraphFormatError, match="occurs twice"):
        from_neuronpedia_json(document)


@pytest.mark.parametrize("seed", range(3))
def test_random_graph_ids_unique(seed: int) -> None:
    graph = random_graph(n_layers=4, n_pos=6, n_features=200, n_targets=4, n_custom_targets=2, seed=seed)
    ids = node_ids(graph)
    assert len(set(ids)) == len(ids) == graph.n_nodes


def test_cantor_pairing_round_trips() -> None:
    for layer in range(30):
        for feature in (0, 1, 7, 1000, 2**20):
            assert cantor_unpair(cantor_pair(layer, feature)) == (layer, feature)


def test_custom_targets_get_virtual_vocab_ids() -> None:
    graph = random_graph(n_targets=3, n_custom_targets=2, vocab_size=500, seed=2)
    logits = [n for n in to_neuronpedia_json(graph, "c")["nodes"] if n["feature_type"] == "logit"]
    assert [n["feature"] for n in logits][1:] == [501, 502]
    graph.metadata.pop("vocab_size")
    with pytest.raises(GraphFormatError, match="vocab_size"):
        to_neuronpedia_json(graph, "c")


def test_output_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Same bytes from two fresh interpreters (different hash seeds), including a hashed scan."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.graph.factory import random_graph;"
        "from tracewire.graph.neuronpedia import to_neuronpedia_json, dumps;"
        "g = random_graph(n_layers=3, n_pos=5, n_features=60, n_targets=3, seed=4);"
        "sys.stdout.write(dumps(to_neuronpedia_json(g, 's', scan=['tc-a', 'tc-b'])))"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, str(Path(__file__).resolve().parents[2])],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            cwd=tmp_path,
        ).stdout
        for seed in (1, 2)
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["metadata"]["scan"] == scan_name(["tc-a", "tc-b"])
    assert scan_name(["tc-a", "tc-b"]).startswith("custom-")
    assert scan_name(["tc-a", "tc-b"]) != scan_name(["tc-b", "tc-a"])


def test_scan_defaults_and_transcoder_list() -> None:
    graph = random_graph(seed=1)
    assert to_neuronpedia_json(graph, "s")["metadata"]["scan"] == "random-transcoders"
    metadata = to_neuronpedia_json(graph, "s", scan=["a", "b"])["metadata"]
    assert metadata["transcoder_list"] == ["a", "b"]
    graph.metadata.pop("scan")
    assert to_neuronpedia_json(graph, "s")["metadata"]["scan"] == "random-model"


def test_q_params_round_trip(tmp_path: Path) -> None:
    graph = random_graph(seed=5)
    q_params = {
        "pinnedIds": ["E_1_0"],
        "supernodes": [["say a capital", "1_2_3", "1_4_3"]],
        "linkType": "input",
        "clickedId": "1_2_3",
        "sg_pos": "1,2;3,4",
        "custom": {"kept": [1, 2]},
    }
    document = to_neuronpedia_json(graph, "q", q_params=q_params)
    assert document["qParams"] == q_params
    assert to_neuronpedia_json(graph, "q")["qParams"] == DEFAULT_Q_PARAMS
    path = write_graph_files(graph, "q", tmp_path, q_params=q_params)
    assert to_neuronpedia_json(from_neuronpedia_json(path), "q")["qParams"] == q_params


def test_write_graph_files_updates_metadata_listing(tmp_path: Path) -> None:
    first = write_graph_files(random_graph(seed=1), "one", tmp_path)
    write_graph_files(random_graph(seed=2), "two", tmp_path)
    assert first == tmp_path / "one.json"
    text = first.read_text()
    assert "\n" not in text and ": " not in text  # compact
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [entry["slug"] for entry in listing["graphs"]] == ["one", "two"]
    # Same slug again: replaced in place, not appended.
    write_graph_files(random_graph(seed=3), "one", tmp_path, node_threshold=0.5)
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [entry["slug"] for entry in listing["graphs"]] == ["one", "two"]
    assert listing["graphs"][0]["node_threshold"] == 0.5
    assert listing["graphs"][0] == json.loads((tmp_path / "one.json").read_text())["metadata"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_corrupt_metadata_listing_is_reported(tmp_path: Path) -> None:
    (tmp_path / "graph-metadata.json").write_text("{broken")
    with pytest.raises(GraphFormatError, match=r"graph-metadata\.json"):
        write_graph_files(random_graph(seed=1), "one", tmp_path)


def test_bad_slug_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphFormatError, match="slug"):
        write_graph_files(random_graph(seed=1), "../escape", tmp_path)


def test_gzip_variant_is_readable_and_deterministic(tmp_path: Path) -> None:
    graph = random_graph(seed=6)
    path = write_graph_files(graph, "zipped", tmp_path / "a", gzip=True)
    again = write_graph_files(graph, "zipped", tmp_path / "b", gzip=True)
    assert path.name == "zipped.json.gz"
    assert path.read_bytes() == again.read_bytes()
    document = json.loads(gzip.decompress(path.read_bytes()))
    assert document == to_neuronpedia_json(graph, "zipped")
    imported = from_neuronpedia_json(path)
    assert imported.n_edges == len(document["links"])


@pytest.mark.parametrize("seed", range(4))
def test_json_graph_json_is_stable(tmp_path: Path, seed: int) -> None:
    graph = random_graph(n_layers=3, n_pos=5, n_features=60, n_targets=3, n_custom_targets=1, seed=seed)
    labels = {tuple(graph.features[i, [0, 2]].tolist()): f"feature {i}" for i in range(0, 60, 3)}
    first = to_neuronpedia_json(graph, "stable", feature_labels=labels)  # type: ignore[arg-type]
    path = tmp_path / "stable.json"
    path.write_text(dumps(first))
    imported = from_neuronpedia_json(path)
    second = to_neuronpedia_json(imported, "stable")
    assert dumps(second) == dumps(first)
    # The imported graph also survives the safetensors format and still exports the same.
    reloaded = Graph.load(imported.save(tmp_path / "stable.safetensors"))
    assert dumps(to_neuronpedia_json(reloaded, "stable")) == dumps(first)


def test_import_recovers_graph_content() -> None:
    graph = hand_built_graph()
    imported = from_neuronpedia_json(to_neuronpedia_json(graph, "hand", prune=keep_all(graph)))
    assert imported.n_layers == 1 and imported.n_pos == 2
    assert imported.prompt == graph.prompt and imported.token_strings == graph.token_strings
    assert torch.equal(imported.tokens, graph.tokens)
    assert torch.equal(imported.features, graph.features)
    assert torch.equal(imported.activations, graph.activations)
    assert imported.target_labels == ["c"]
    assert torch.equal(imported.target_token_ids, graph.target_token_ids)
    assert torch.equal(imported.target_probabilities, graph.target_probabilities)
    assert imported.target_vectors.shape == (1, 0)  # not in the JSON
    assert torch.equal(imported.coalesce().edge_weights, graph.coalesce().edge_weights)
    assert torch.equal(imported.coalesce().edge_sources, graph.coalesce().edge_sources)
    # A modified import is pruned afresh rather than written back as imported.
    smaller = replace(
        imported,
        edge_targets=imported.edge_targets[:-1],
        edge_sources=imported.edge_sources[:-1],
        edge_weights=imported.edge_weights[:-1],
    )
    assert "pruning_settings" in to_neuronpedia_json(smaller, "hand")["metadata"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("nodes"), "nodes"),
        (lambda d: d["links"].append({"source": "nope", "target": "E_7_0", "weight": 1.0}), "nope"),
        (lambda d: d["links"][0].update(weight="heavy"), "weight"),
        (lambda d: d["nodes"][0].update(ctx_idx=99), "ctx_idx"),
        (lambda d: d["metadata"].pop("prompt_tokens"), "prompt_tokens"),
        (lambda d: d["nodes"].append(_embedding_copy(d, "E_999_0")), "same graph node"),
        (lambda d: d["nodes"].append(_embedding_copy(d, "E_7_0")), "E_7_0"),
    ],
)
def test_import_errors_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    graph = hand_built_graph()
    document = to_neuronpedia_json(graph, "hand", prune=keep_all(graph))
    mutate(document)
    with pytest.raises(GraphFormatError, match=message):
        from_neuronpedia_json(document)


def _embedding_copy(document: dict[str, Any], node_id: str) -> dict[str, Any]:
    embedding = next(node for node in document["nodes"] if node["feature_type"] == "embedding")
    return {**embedding, "node_id": node_id, "ctx_idx": 0}


def test_import_of_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(GraphFormatError, match=r"bad\.json"):
        from_neuronpedia_json(path)


def test_export_rejects_mismatched_prune_result() -> None:
    graph = random_graph(seed=1)
    with pytest.raises(GraphFormatError, match="node_mask"):
        to_neuronpedia_json(graph, "x", prune=keep_all(random_graph(seed=1, n_features=3)))
