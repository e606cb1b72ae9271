"""Graphs that ``attribute()`` made, exported to Neuronpedia JSON the way users export them.

The fixtures of ``tests/graph`` supply the exporter's metadata keys themselves; these tests do
not: whatever ``attribute()`` writes is what the exporter reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.factories.models import random_ids, tiny_model
from tracewire.attribution.engine import attribute
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import from_neuronpedia_json, write_graph_files
from tracewire.graph.neuronpedia_ids import neuronpedia_schema
from tracewire.replacement.model import ReplacementModel
from tracewire.transcoders.synthetic import random_clt


@pytest.mark.parametrize(
    ("budget", "scan", "expected_scan"),
    [(None, "tiny-clt-scan", "tiny-clt-scan"), (6, None, "tiny-random")],  # no scan: the set's model name
)
def test_attributed_graph_exports_valid_json_with_its_scan(
    tmp_path: Path, budget: int | None, scan: str | None, expected_scan: str
) -> None:
    lm = tiny_model("llama", seed=3)
    transcoders = random_clt(3, lm.d_model, 16, activation="relu", seed=3, scan=scan)
    graph = attribute(
        random_ids(6, seed=4), ReplacementModel(lm, transcoders), max_feature_nodes=budget, progress=False
    )
    # through the file a user has: attribute → save → load → export
    graph.save(tmp_path / "g.safetensors")
    path = write_graph_files(Graph.load(tmp_path / "g.safetensors"), "attributed", tmp_path / "json")
    document = json.loads(path.read_text())

    jsonschema.Draft7Validator(neuronpedia_schema()).validate(document)
    metadata = document["metadata"]
    assert metadata["scan"] == expected_scan
    expected_budget = graph.metadata["n_active_features"] if budget is None else budget
    assert metadata["generation_settings"] == {
        "max_n_logits": 10,
        "desired_logit_prob": 0.95,
        "batch_size": 64,
        "max_feature_nodes": expected_budget,
    }
    assert metadata["d_model"] == lm.d_model and metadata["vocab_size"] == lm.vocab_size
    listing = json.loads((tmp_path / "json" / "graph-metadata.json").read_text())
    assert [entry["scan"] for entry in listing["graphs"]] == [expected_scan]

    # the import sizes target vectors by d_model and keeps the scan
    imported = from_neuronpedia_json(path)
    assert tuple(imported.target_vectors.shape) == (graph.n_targets, lm.d_model)
    assert imported.metadata["scan"] == expected_scan
