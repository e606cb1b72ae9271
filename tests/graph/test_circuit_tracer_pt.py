"""circuit-tracer ``.pt`` import: real-looking files convert, malicious pickles never run."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from tests.graph.factory import dense_adjacency, random_graph
from tracewire.errors import GraphFormatError
from tracewire.graph.circuit_tracer_pt import PickledRecord, RestrictedUnpickler, load_circuit_tracer_pt
from tracewire.graph.graph import Graph


class LogitTarget(NamedTuple):
    token_str: str
    vocab_idx: int


@dataclasses.dataclass
class UnifiedConfig:
    n_layers: int
    d_model: int
    d_vocab: int
    model_name: str
    dtype: torch.dtype = torch.float32
    act_fn: str = "gelu"


@pytest.fixture
def circuit_tracer_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the pickles name circuit-tracer's module paths, as real files do."""
    targets = types.ModuleType("circuit_tracer.attribution.targets")
    utils = types.ModuleType("circuit_tracer.utils.tl_nnsight_mapping")
    for module, cls in ((targets, LogitTarget), (utils, UnifiedConfig)):
        monkeypatch.setattr(cls, "__module__", module.__name__)
        setattr(module, cls.__name__, cls)
        parts = module.__name__.split(".")
        for depth in range(1, len(parts)):  # pickle imports the parent packages too
            parent = ".".join(parts[:depth])
            if parent not in sys.modules:
                monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        monkeypatch.setitem(sys.modules, module.__name__, module)


def circuit_tracer_dict(graph: Graph, *, old_style: bool = False) -> dict[str, Any]:
    """What circuit-tracer's ``Graph.to_pt`` saves for ``graph`` (plus unselected features)."""
    extra = torch.tensor([[0, 0, 999], [1, 1, 998]])
    active = torch.cat([extra, graph.features])
    selected = torch.arange(graph.n_features) + 2
    vocab_size = int(graph.metadata["vocab_size"])
    target_ids = [int(t) if t >= 0 else vocab_size + k for k, t in enumerate(graph.target_token_ids.tolist())]
    data: dict[str, Any] = {
        "input_string": graph.prompt,
        "input_tokens": graph.tokens,
        "active_features": active,
        "activation_values": torch.cat([torch.tensor([7.0, 8.0]), graph.activations]),
        "selected_features": selected,
        "adjacency_matrix": dense_adjacency(graph).float(),
        "logit_probabilities": graph.target_probabilities,
        "scan": "gemma-2-2b-transcoders",
    }
    if old_style:
        data["logit_tokens"] = torch.tensor(target_ids)
    else:
        data["logit_targets"] = [
            LogitTarget(label, vocab) for label, vocab in zip(graph.target_labels, target_ids)
        ]
        data["vocab_size"] = vocab_size
        data["cfg"] = UnifiedConfig(n_layers=graph.n_layers, d_model=16, d_vocab=vocab_size, model_name="toy")
    return data


def test_real_looking_file_converts(tmp_path: Path, circuit_tracer_modules: None) -> None:
    graph = random_graph(n_layers=3, n_pos=4, n_features=25, n_targets=3, n_custom_targets=1, seed=1)
    path = tmp_path / "graph.pt"
    torch.save(circuit_tracer_dict(graph), path)
    loaded = load_circuit_tracer_pt(path)
    assert torch.equal(loaded.features, graph.features)
    assert torch.equal(loaded.activations, graph.activations)
    assert loaded.target_labels == graph.target_labels
    assert torch.equal(loaded.target_token_ids, graph.target_token_ids)  # virtual id → -1
    assert loaded.n_layers == 3 and loaded.d_model == 16
    assert loaded.token_strings == [f"<{t}>" for t in graph.tokens.tolist()]
    expected = graph.coalesce()
    assert torch.equal(loaded.edge_targets, expected.edge_targets)
    assert torch.equal(loaded.edge_sources, expected.edge_sources)
    assert torch.equal(loaded.edge_weights, expected.edge_weights)
    assert loaded.metadata["model_id"] == "toy"
    assert loaded.metadata["scan"] == "gemma-2-2b-transcoders"
    assert loaded.metadata["circuit_tracer_cfg"]["dtype"] == "torch.float32"


def test_tokenizer_decodes_prompt_tokens(tmp_path: Path, circuit_tracer_modules: None) -> None:
    graph = random_graph(seed=2)
    path = tmp_path / "graph.pt"
    torch.save(circuit_tracer_dict(graph), path)

    class Tokenizer:
        def decode(self, ids: list[int]) -> str:
            return f"tok{ids[0]}"

    loaded = load_circuit_tracer_pt(path, tokenizer=Tokenizer())
    assert loaded.token_strings == [f"tok{t}" for t in graph.tokens.tolist()]


def test_old_style_file_with_plain_types_uses_weights_only(tmp_path: Path) -> None:
    graph = random_graph(n_layers=2, n_pos=3, n_features=10, n_targets=2, seed=3)
    path = tmp_path / "old.pt"
    torch.save(circuit_tracer_dict(graph, old_style=True), path)
    loaded = load_circuit_tracer_pt(path)
    assert loaded.n_layers == 2  # inferred from the matrix size
    assert loaded.target_labels == [f"<{t}>" for t in graph.target_token_ids.tolist()]
    assert torch.equal(loaded.coalesce().edge_weights, graph.coalesce().edge_weights)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path, circuit_tracer_modules: None) -> None:
    marker = tmp_path / "pwned"
    data = circuit_tracer_dict(random_graph(seed=4))
    data["cfg"] = _Exploit(marker)
    path = tmp_path / "evil.pt"
    torch.save(data, path)
    with pytest.raises(GraphFormatError, match=r"evil\.pt.*(posix|os)\.system") as caught:
        load_circuit_tracer_pt(path)
    assert not marker.exists()
    assert "re-save" in str(caught.value)


def test_exec_inside_logit_targets_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))

    path = tmp_path / "evil.pt"
    torch.save({"logit_targets": [Payload()]}, path)
    with pytest.raises(GraphFormatError, match=r"builtins\.exec"):
        load_circuit_tracer_pt(path)
    assert not (tmp_path / "PWNED").exists()


def test_stand_in_names_give_inert_records() -> None:
    """A pickle that calls a 'LogitTarget' from any module gets a plain tuple, nothing imported."""
    crafted = b"cos.evil\nLogitTarget\n(S'rm -rf /'\nI7\ntR."
    record = RestrictedUnpickler(io.BytesIO(crafted)).load()
    assert isinstance(record, PickledRecord)
    assert tuple(record) == ("rm -rf /", 7)
    assert "os.evil" not in sys.modules
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        RestrictedUnpickler(io.BytesIO(b"cos\nsystem\n(S'true'\ntR.")).load()


def test_garbage_and_wrong_content(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(GraphFormatError, match="garbage"):
        load_circuit_tracer_pt(garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"input_tokens": torch.zeros(3, dtype=torch.long)}, wrong)
    with pytest.raises(GraphFormatError, match="active_features"):
        load_circuit_tracer_pt(wrong)
    with pytest.raises(FileNotFoundError):
        load_circuit_tracer_pt(tmp_path / "missing.pt")


def test_inconsistent_sizes_are_reported(tmp_path: Path, circuit_tracer_modules: None) -> None:
    graph = random_graph(seed=5)
    data = circuit_tracer_dict(graph)
    data["cfg"] = UnifiedConfig(n_layers=graph.n_layers + 1, d_model=16, d_vocab=1000, model_name="toy")
    path = tmp_path / "sizes.pt"
    torch.save(data, path)
    with pytest.raises(GraphFormatError, match=r"expected .* nodes"):
        load_circuit_tracer_pt(path)
