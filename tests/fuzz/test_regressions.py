"""Every repro of issue 17 (hostile files, lying resumes, killed rebuilds) as a regression test.

Each repro used to allocate gigabytes, hang, print a traceback or accept a broken file; each test
asserts the clean refusal (the error class and the file/field it names) and, where the repro was
a resource problem, that it is refused before the allocation (under a time limit, with the size
the file declared never reached).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.factories.transcoders import random_set, write_gemmascope_layers
from tests.fuzz.engine import time_limit
from tests.graph.factory import random_graph
from tracewire.errors import (
    CheckpointError,
    GraphFormatError,
    InvalidArgumentError,
    ResourceLimitError,
    TranscoderFormatError,
)
from tracewire.graph import Graph
from tracewire.graph.neuronpedia import to_neuronpedia_json
from tracewire.graph.neuronpedia_import import from_neuronpedia_json
from tracewire.graph.pruning import keep_all
from tracewire.transcoders import load_transcoders, save_transcoders

GIB = 1024**3


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture
def bounded():
    """Run the body under a 10 s alarm and assert it raised the peak RSS by < 0.5 GiB."""
    before = _peak_rss_bytes()
    with time_limit(10):
        yield
    assert _peak_rss_bytes() - before < GIB // 2


# ------------------------------------------------------------------ unbounded allocations


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_a_huge_layer_index_in_a_file_name_is_refused_before_allocating(
    tmp_path: Path, kind: str, bounded
) -> None:
    save_transcoders(random_set(kind, n_layers=2), tmp_path)
    name = "layer_{}.safetensors" if kind == "plt" else "W_enc_{}.safetensors"
    (tmp_path / name.format(1)).rename(tmp_path / name.format(99999999999))
    with pytest.raises(ResourceLimitError, match=r"99999999999.*at most 1024 layers"):
        load_transcoders(tmp_path)


def test_a_huge_gemmascope_layer_folder_is_refused(tmp_path: Path, bounded) -> None:
    write_gemmascope_layers(tmp_path, n_layers=2)
    (tmp_path / "layer_1").rename(tmp_path / "layer_99999999999")
    with pytest.raises(ResourceLimitError, match="layer_99999999999"):
        load_transcoders(tmp_path)


def test_a_huge_layer_in_the_config_list_is_refused(tmp_path: Path, bounded) -> None:
    save_transcoders(random_set("plt", n_layers=2), tmp_path)
    config = (tmp_path / "config.yaml").read_text()
    config += "transcoders:\n- {layer: 0, filepath: layer_0.safetensors}\n"
    config += f"- {{layer: {10**18}, filepath: layer_1.safetensors}}\n"
    (tmp_path / "config.yaml").write_text(config)
    with pytest.raises(ResourceLimitError, match=str(10**18)):
        load_transcoders(tmp_path)


def test_a_gzip_bomb_is_refused_at_the_cap(tmp_path: Path, bounded) -> None:
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(b" " * (1 << 20)) for _ in range(80)) + compressor.flush()
    assert len(bomb) < 200_000
    (tmp_path / "bomb.json.gz").write_bytes(bomb)
    with pytest.raises(ResourceLimitError, match="decompresses to more than"):
        from_neuronpedia_json(tmp_path / "bomb.json.gz", max_bytes=64 * 1024 * 1024)


def test_a_served_gzip_bomb_is_a_422_not_a_gigabyte(tmp_path: Path, bounded) -> None:
    from fastapi.testclient import TestClient

    from tracewire.server import create_app, graph_store

    bomb = gzip.compress(b" " * (graph_store.MAX_SERVED_BYTES + 1), compresslevel=9, mtime=0)
    (tmp_path / "bomb.json.gz").write_bytes(bomb)
    with TestClient(create_app(tmp_path), base_url="http://127.0.0.1") as client:
        response = client.get("/api/graphs/bomb")
    assert response.status_code == 422
    assert "decompresses to more than" in response.json()["detail"]


def _document(d_model: int) -> dict:
    graph = random_graph(n_layers=2, n_pos=3, n_features=5, n_targets=2, seed=2)
    document = to_neuronpedia_json(graph, "g", prune=keep_all(graph))
    document["metadata"]["d_model"] = d_model
    return document


def test_a_huge_d_model_in_graph_json_is_refused(tmp_path: Path, bounded) -> None:
    (tmp_path / "g.json").write_text(json.dumps(_document(5 * 10**7)))
    with pytest.raises(ResourceLimitError, match=r"metadata\.d_model is 50000000"):
        from_neuronpedia_json(tmp_path / "g.json")


def test_subgraph_scores_of_a_huge_d_model_is_a_422(tmp_path: Path, bounded) -> None:
    from fastapi.testclient import TestClient

    from tracewire.server import create_app

    document = _document(5 * 10**7)
    (tmp_path / "g.json").write_text(json.dumps(document))
    pinned = [node["node_id"] for node in document["nodes"][:2]]
    with TestClient(create_app(tmp_path), base_url="http://127.0.0.1") as client:
        response = client.post("/api/graphs/g/subgraph-scores", json={"pinnedIds": pinned})
    assert response.status_code == 422, response.text
    assert "d_model" in response.json()["detail"]


def test_a_huge_d_model_in_a_pt_import_is_refused(tmp_path: Path, bounded) -> None:
    from tests.graph.test_circuit_tracer_pt import circuit_tracer_dict
    from tracewire.graph.circuit_tracer_pt import load_circuit_tracer_pt

    data = circuit_tracer_dict(random_graph(seed=3), old_style=True)
    data["cfg"] = {"n_layers": 3, "d_model": 5 * 10**7}
    torch.save(data, tmp_path / "g.pt")
    with pytest.raises(ResourceLimitError, match=r"cfg\.d_model"):
        load_circuit_tracer_pt(tmp_path / "g.pt")


def _rewrite_header(path: Path, **changes: str) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        metadata = dict(reader.metadata())
    tensors = load_file(str(path))
    metadata.update(changes)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("n_layers", [10**8, 4, 2])
def test_graph_n_layers_must_match_the_node_arrays(tmp_path: Path, n_layers: int, bounded) -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=10, n_targets=2, seed=5)
    path = graph.save(tmp_path / "g.safetensors")
    _rewrite_header(path, n_layers=json.dumps(n_layers))
    with pytest.raises(GraphFormatError, match="n_layers"):
        Graph.load(path)


# ------------------------------------------------------------------ non-finite values


NON_FINITE = [
    ("W_dec", float("nan")),
    ("activation_function.threshold", float("nan")),
    ("W_enc", float("inf")),
]


@pytest.mark.parametrize(("tensor", "value"), NON_FINITE)
def test_non_finite_transcoder_weights_name_the_file(tmp_path: Path, tensor: str, value: float) -> None:
    save_transcoders(random_set("plt", n_layers=2, activation="jumprelu"), tmp_path)
    path = tmp_path / "layer_1.safetensors"
    tensors = load_file(str(path))
    tensors[tensor].view(-1)[3] = value
    save_file(tensors, str(path))
    with pytest.raises(
        TranscoderFormatError, match=rf"layer_1\.safetensors, tensor '{tensor}'.*NaN or infinite"
    ):
        load_transcoders(tmp_path)


def test_non_finite_gemmascope_arrays_are_refused(tmp_path: Path) -> None:
    arrays = write_gemmascope_layers(tmp_path, n_layers=1)[0]
    arrays["threshold"][0] = np.nan
    np.savez(tmp_path / "layer_0" / "params.npz", **arrays)
    with pytest.raises(TranscoderFormatError, match=r"'threshold'.*NaN"):
        load_transcoders(tmp_path)


@pytest.mark.parametrize("field", ["activations", "target_vectors"])
def test_non_finite_graph_tensors_are_refused(tmp_path: Path, field: str) -> None:
    graph = random_graph(seed=4)
    path = graph.save(tmp_path / "g.safetensors")
    tensors = load_file(str(path))
    tensors[field].view(-1)[0] = float("nan")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        metadata = reader.metadata()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(GraphFormatError, match=f"'{field}' contains NaN"):
        Graph.load(path)


def test_non_finite_numbers_in_imported_json_are_refused(tmp_path: Path) -> None:
    document = _document(8)
    document["links"][0]["weight"] = float("inf")
    (tmp_path / "g.json").write_text(json.dumps(document))  # json writes Infinity, which json reads back
    with pytest.raises(GraphFormatError, match=r"links\[0\]\.weight"):
        from_neuronpedia_json(tmp_path / "g.json")


# ------------------------------------------------------------------ FIFOs never hang a loader


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def test_fifos_are_refused_without_blocking(tmp_path: Path, bounded) -> None:
    from tracewire.corpus import TokenCorpus
    from tracewire.dashboards.store import FeatureStore, FeatureStoreError
    from tracewire.errors import TracewireError
    from tracewire.graph.circuit_tracer_pt import load_circuit_tracer_pt
    from tracewire.training.checkpoint import load_checkpoint

    with pytest.raises(GraphFormatError, match="not a regular file"):
        Graph.load(_fifo(tmp_path / "g.safetensors"))
    with pytest.raises(GraphFormatError, match="not a regular file"):
        from_neuronpedia_json(_fifo(tmp_path / "g.json"))
    with pytest.raises(GraphFormatError, match="not a regular file"):
        load_circuit_tracer_pt(_fifo(tmp_path / "g.pt"))
    with pytest.raises(FeatureStoreError, match="not a regular file"):
        FeatureStore(_fifo(tmp_path / "f.sqlite"), readonly=True)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(_fifo(tmp_path / "ckpt" / "latest.json").parent)
    with pytest.raises(TracewireError, match="not a regular file"):
        TokenCorpus(_fifo(tmp_path / "corpus" / "manifest.json").parent)
    save_transcoders(random_set("plt", n_layers=2), tmp_path / "tc")
    (tmp_path / "tc" / "layer_1.safetensors").unlink()
    _fifo(tmp_path / "tc" / "layer_1.safetensors")
    with pytest.raises(TranscoderFormatError, match="not a regular file"):
        load_transcoders(tmp_path / "tc")


# ------------------------------------------------------------------ resume cannot lie


def _checkpoint(root: Path, **tensor_changes: torch.Tensor) -> Path:
    from tracewire.training.checkpoint import save_checkpoint

    tensors = {
        "module.W": torch.ones(2, 3),
        "adam.W.exp_avg": torch.zeros(2, 3),
        "fire_ema": torch.zeros(2, 3),
    }
    tensors.update(tensor_changes)
    save_checkpoint(root, 7, tensors, {"config": {"lr": 0.1}, "next_step": 7})
    return root


def test_a_checkpoint_loads_back_whole(tmp_path: Path) -> None:
    from tracewire.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(_checkpoint(tmp_path))
    assert checkpoint is not None and checkpoint.step == 7
    assert torch.equal(checkpoint.tensors["module.W"], torch.ones(2, 3))
    assert checkpoint.state["config"] == {"lr": 0.1}


@pytest.mark.parametrize("name", ["module.W", "adam.W.exp_avg"])
def test_nan_weights_or_adam_moments_are_never_resumed(tmp_path: Path, name: str) -> None:
    from tracewire.training.checkpoint import load_checkpoint

    _checkpoint(tmp_path, **{name: torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}'.*NaN"):
        load_checkpoint(tmp_path)


def test_latest_json_is_not_trusted_blindly(tmp_path: Path) -> None:
    from tracewire.training.checkpoint import load_checkpoint

    _checkpoint(tmp_path)
    pointer = json.loads((tmp_path / "latest.json").read_text())
    (tmp_path / "latest.json").write_text(json.dumps({**pointer, "step": 700}))
    with pytest.raises(CheckpointError, match="step-00000700"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({**pointer, "tensors": "../../etc/passwd"}))
    with pytest.raises(CheckpointError, match="field 'tensors'"):
        load_checkpoint(tmp_path)


def test_tensors_that_disagree_with_the_manifest_are_refused(tmp_path: Path) -> None:
    from tracewire.training.checkpoint import load_checkpoint

    _checkpoint(tmp_path)
    path = tmp_path / "step-00000007.safetensors"
    tensors = load_file(str(path))
    tensors["module.W"] = torch.ones(3, 2)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"'module\.W'.*manifest"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"), [("batch_windows", 16), ("tokens", 400), ("lr", 0.5), ("seed", 3)]
)
def test_resume_refuses_a_changed_schedule_field_naming_it(field: str, value: object) -> None:
    from tracewire.training.config import TrainConfig
    from tracewire.training.trainer import _check_resumable

    saved = TrainConfig()
    with pytest.raises(InvalidArgumentError, match=rf"{field}: checkpoint .* vs now {value!r}"):
        _check_resumable(saved.to_dict(), saved.replace(**{field: value}), 10, Path("ckpt"))
    _check_resumable(saved.to_dict(), saved.replace(checkpoint_every=7, log_every=3), 10, Path("ckpt"))


def test_resume_refuses_a_step_beyond_the_run() -> None:
    from tracewire.training.config import TrainConfig
    from tracewire.training.trainer import _check_resumable

    config = TrainConfig(tokens=400 * 32 * 127)
    with pytest.raises(CheckpointError, match="step 700, beyond this run's 400 steps"):
        _check_resumable(config.to_dict(), config, 700, Path("ckpt"))
