"""Graph: node index layout, validation, sparse adjacency and the safetensors file format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from tests.graph.factory import dense_adjacency, random_graph
from tracewire.errors import GraphFormatError
from tracewire.graph.graph import FORMAT_NAME, TENSOR_FIELDS, Graph, NodeKind


def test_node_layout_matches_documented_order() -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=10, n_targets=2, seed=1)
    F = graph.n_features
    assert graph.error_offset == F
    assert graph.error_index(2, 1) == F + 2 * 4 + 1
    assert graph.token_offset == F + 12
    assert graph.token_index(3) == F + 12 + 3
    assert graph.target_index(1) == F + 12 + 4 + 1
    assert graph.n_nodes == F + 12 + 4 + 2
    assert graph.node_kind(0) is NodeKind.FEATURE
    assert graph.node_kind(F) is NodeKind.ERROR
    assert graph.node_kind(graph.token_offset) is NodeKind.TOKEN
    assert graph.node_kind(graph.n_nodes - 1) is NodeKind.TARGET
    kinds = graph.node_kinds()
    assert [graph.node_kind(i) for i in range(graph.n_nodes)] == [NodeKind(int(k)) for k in kinds]
    with pytest.raises(IndexError):
        graph.error_index(3, 0)
    with pytest.raises(IndexError):
        graph.node_kind(graph.n_nodes)


def test_node_layer_pos_and_feature_error_indices() -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=10, seed=2)
    layer, pos = graph.node_layer_pos()
    assert torch.equal(layer[: graph.n_features], graph.features[:, 0])
    assert (int(layer[graph.error_index(2, 3)]), int(pos[graph.error_index(2, 3)])) == (2, 3)
    assert (int(layer[graph.token_index(1)]), int(pos[graph.token_index(1)])) == (-1, 1)
    assert (int(layer[graph.target_index(0)]), int(pos[graph.target_index(0)])) == (3, 3)
    errors = graph.feature_error_indices()
    for i in range(graph.n_features):
        feature_layer, feature_pos, _ = graph.features[i].tolist()
        assert int(errors[i]) == graph.error_index(feature_layer, feature_pos)


def test_adjacency_csr_matches_dense() -> None:
    graph = random_graph(seed=3)
    csr = graph.adjacency_csr()
    assert csr.layout == torch.sparse_csr
    assert torch.equal(csr.to_dense().double(), dense_adjacency(graph))


def test_coalesce_sums_duplicates() -> None:
    graph = random_graph(seed=4)
    doubled = replace(
        graph,
        edge_targets=torch.cat([graph.edge_targets, graph.edge_targets[:5]]),
        edge_sources=torch.cat([graph.edge_sources, graph.edge_sources[:5]]),
        edge_weights=torch.cat([graph.edge_weights, graph.edge_weights[:5]]),
    )
    merged = doubled.coalesce()
    assert merged.n_edges == graph.n_edges
    assert torch.allclose(dense_adjacency(merged), dense_adjacency(doubled))


def test_to_casts_only_floating_fields() -> None:
    graph = random_graph(seed=5)
    half = graph.to(torch.bfloat16)
    assert half.edge_weights.dtype == torch.bfloat16 and half.target_vectors.dtype == torch.bfloat16
    assert half.edge_targets.dtype == torch.int64 and half.features.dtype == torch.int64
    assert graph.equals(half.to(torch.float32), atol=0.05)
    assert not graph.equals(half)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("features", torch.zeros(2, 2, dtype=torch.long), "features"),
        ("edge_targets", torch.tensor([10_000]), "edge_targets"),
        ("edge_sources", torch.tensor([0.0]), "int64"),
        ("activations", torch.zeros(1), "activations"),
        ("token_strings", ["only one"], "token_strings"),
        ("edge_weights", torch.tensor([float("nan")]), "NaN"),
    ],
)
def test_invalid_graph_names_the_field(field: str, value: object, message: str) -> None:
    graph = random_graph(seed=6)
    changes: dict[str, object] = {field: value}
    if field.startswith("edge_") and isinstance(value, torch.Tensor):
        n = int(value.shape[0])
        changes = {
            "edge_targets": graph.edge_targets[:n],
            "edge_sources": graph.edge_sources[:n],
            "edge_weights": graph.edge_weights[:n],
            field: value,
        }
    with pytest.raises(GraphFormatError, match=message):
        replace(graph, **changes)  # type: ignore[arg-type]


def test_feature_layer_out_of_range() -> None:
    graph = random_graph(seed=7)
    features = graph.features.clone()
    features[0, 0] = graph.n_layers
    with pytest.raises(GraphFormatError, match="layers"):
        replace(graph, features=features)


# ---------------------------------------------------------------------------- file format


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_save_load_round_trip_is_bit_identical(tmp_path: Path, dtype: torch.dtype) -> None:
    graph = random_graph(n_custom_targets=1, seed=8, dtype=dtype)
    graph.metadata.update({"settings": {"batch_size": 4}, "zeroed_positions": [0], "note": "ünïcode ✓"})
    graph = replace(graph, prompt='He said "hi"\n\tünïcode')
    path = graph.save(tmp_path / "g.safetensors")
    loaded = Graph.load(path)
    assert loaded.diff(graph) == []
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temp file left behind


def test_empty_graph_round_trip(tmp_path: Path) -> None:
    graph = random_graph(n_features=0, n_targets=0, seed=9)
    graph = replace(
        graph,
        edge_targets=graph.edge_targets[:0],
        edge_sources=graph.edge_sources[:0],
        edge_weights=graph.edge_weights[:0],
    )
    assert Graph.load(graph.save(tmp_path / "empty.safetensors")).equals(graph)


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    random_graph(seed=1).save(path)
    second = random_graph(seed=2)
    second.save(path)
    assert Graph.load(path).equals(second)


def test_save_rejects_unserialisable_metadata(tmp_path: Path) -> None:
    graph = random_graph(seed=1)
    graph.metadata["bad"] = object()
    with pytest.raises(GraphFormatError, match="metadata"):
        graph.save(tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()


def _header_and_tensors(graph: Graph) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    header = {"format": FORMAT_NAME, "format_version": "1"}
    for name in ("prompt", "token_strings", "target_labels", "n_layers", "metadata"):
        header[name] = json.dumps(getattr(graph, name))
    return header, {name: getattr(graph, name) for name in TENSOR_FIELDS}


def test_truncated_file_is_rejected_with_its_name(tmp_path: Path) -> None:
    path = random_graph(seed=1).save(tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(GraphFormatError, match=r"cut\.safetensors.*(corrupt|truncated)"):
        Graph.load(path)


def test_garbage_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors file at all")
    with pytest.raises(GraphFormatError, match="garbage"):
        Graph.load(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Graph.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h, t: h.update(format_version="2"), "newer tracewire"),
        (lambda h, t: h.update(format="something-else"), "not a tracewire graph"),
        (lambda h, t: h.pop("token_strings"), "token_strings"),
        (lambda h, t: h.update(metadata="{not json"), "not valid JSON"),
        (lambda h, t: h.update(n_layers='"three"'), "n_layers"),
        (lambda h, t: t.pop("edge_weights"), "edge_weights"),
        (lambda h, t: t.update(features=t["features"][:, :2].contiguous()), "features"),
        (lambda h, t: t.update(edge_targets=t["edge_targets"].int()), "int64"),
    ],
)
def test_bad_file_contents_are_named(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    header, tensors = _header_and_tensors(random_graph(seed=1))
    mutate(header, tensors)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_save(tensors, metadata=header))
    with pytest.raises(GraphFormatError, match=message) as caught:
        Graph.load(path)
    assert "bad.safetensors" in str(caught.value)


def test_optional_sections_round_trip_and_non_finite_sections_are_refused(tmp_path: Path) -> None:
    graph = random_graph(seed=3)
    loadings = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    graph = replace(graph, sections={"attention.loadings.direct": loadings})
    graph.save(tmp_path / "g.safetensors")
    back = Graph.load(tmp_path / "g.safetensors")
    assert torch.equal(back.sections["attention.loadings.direct"], loadings)

    loadings[1, 2] = float("nan")
    replace(graph, sections={"attention.loadings.direct": loadings}).save(tmp_path / "nan.safetensors")
    with pytest.raises(GraphFormatError, match=r"nan\.safetensors.*attention\.loadings\.direct.*1 NaN"):
        Graph.load(tmp_path / "nan.safetensors")
