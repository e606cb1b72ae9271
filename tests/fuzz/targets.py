"""The loaders under fuzz: how to write a valid artifact, which files to damage, how to load, what must hold.

A *target* writes one small valid artifact (from the test factories) into a folder, names the
files a mutation may damage (with the mutators that fit each file's format) and loads the
artifact the way a user does. ``load`` reads everything a user would touch (every card of a
store, every window of a corpus), so damage that only shows on use is found. ``check`` runs on
what loaded and returns a broken invariant, if any: a loader that accepts such a file has
*silently accepted* it, which the fuzz counts as a failure just like a raw traceback.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.fuzz import mutations as m

Summary = dict[str, Any]


@dataclass
class Target:
    """One loader: ``build(root)`` writes a valid artifact and returns the path the loader takes."""

    name: str
    build: Callable[[Path], Path]
    files: dict[str, tuple[m.Mutator, ...]]
    load: Callable[[Path], Summary]
    check: Callable[[Summary, Summary], str | None]
    folder_mutators: tuple[Callable[[random.Random, Path], str], ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------ shared checks


def _finite_tensors(tensors: dict[str, torch.Tensor]) -> str | None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"non-finite values in {name}"
    return None


def _same(summary: Summary, reference: Summary, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if summary.get(key) != reference.get(key):
            return f"{key} is {summary.get(key)!r}, the valid file has {reference.get(key)!r}"
    return None


# ------------------------------------------------------------------------------ transcoders

SAFETENSORS_MUTATORS = (
    m.safetensors_header,
    m.safetensors_header,
    m.safetensors_nan,
    m.safetensors_nan,
    *m.BYTE_MUTATORS,
)
YAML_MUTATORS = (m.yaml_field, m.yaml_field, m.yaml_field, m.truncate, m.overwrite_span, m.fifo, m.empty)
JSON_MUTATORS = (m.json_field, m.json_field, m.json_field, m.json_field, *m.BYTE_MUTATORS)


def _transcoder_summary(path: Path) -> Summary:
    from tracewire.transcoders import load_transcoders

    ts = load_transcoders(path)
    tensors = {name: t for name, t in ts.state_dict().items()}
    for layer in range(ts.n_layers):
        threshold = ts.threshold(layer)
        if threshold is not None:
            tensors[f"threshold.{layer}"] = threshold
        tensors[f"W_dec.{layer}"] = ts.full_decoder(layer)
    return {
        "n_layers": ts.n_layers,
        "d_model": ts.d_model,
        "d_transcoder": ts.d_transcoder,
        "kind": ts.kind,
        "activation": ts.config.activation,
        "tensors": tensors,
    }


def _transcoder_check(summary: Summary, reference: Summary) -> str | None:
    return _same(summary, reference, ("n_layers", "d_model", "d_transcoder", "kind")) or _finite_tensors(
        summary["tensors"]
    )


def _rename_layer(pattern: str) -> Callable[[random.Random, Path], str]:
    def rename(rng: random.Random, root: Path) -> str:
        new = pattern.format(rng.choice([2, 5, 99999999999, 10**18]))
        source = root / pattern.format(rng.randrange(2))
        source.rename(root / new)
        return f"rename {source.name} -> {new}"

    return rename


def _listed_layers(rng: random.Random, root: Path) -> str:
    import yaml

    config = yaml.safe_load((root / "config.yaml").read_text())
    layer = rng.choice([10**18, 2**40, 99999999999, -1, 1, "x"])
    config["transcoders"] = [
        {"layer": 0, "filepath": "layer_0.safetensors"},
        {"layer": layer, "filepath": "layer_1.safetensors"},
    ]
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return f"config lists layer {layer}"


def _build_plt(root: Path) -> Path:
    from tests.factories.transcoders import random_set
    from tracewire.transcoders import save_transcoders

    save_transcoders(random_set("plt", n_layers=2, d_model=8, d_tc=16, seed=3), root)
    return root


def _build_clt(root: Path) -> Path:
    from tests.factories.transcoders import random_set
    from tracewire.transcoders import save_transcoders

    save_transcoders(random_set("skip-clt", n_layers=2, d_model=8, d_tc=16, seed=4), root)
    return root


def _build_gemmascope(root: Path) -> Path:
    from tests.factories.transcoders import write_gemmascope_layers

    write_gemmascope_layers(root, n_layers=2, d_model=8, d_tc=16)
    return root


def _rename_gemmascope_layer(rng: random.Random, root: Path) -> str:
    new = f"layer_{rng.choice([3, 99999999999, 10**18])}"
    (root / f"layer_{rng.randrange(2)}").rename(root / new)
    return f"rename a layer folder -> {new}"


# ------------------------------------------------------------------------------ graphs


def _reference_graph() -> Any:
    from tests.graph.factory import random_graph

    return random_graph(n_layers=3, n_pos=4, n_features=12, n_targets=2, seed=7)


def _graph_summary(graph: Any) -> Summary:
    """Sizes, and an independent check of the node-order invariants (not ``Graph.validate``)."""
    n_features, n_pos, n_targets = (
        int(graph.features.shape[0]),
        int(graph.tokens.shape[0]),
        len(graph.target_labels),
    )
    error_start = n_features
    token_start = error_start + graph.n_layers * n_pos
    target_start = token_start + n_pos
    n_nodes = target_start + n_targets
    problems = []
    sources, targets = graph.edge_sources.tolist(), graph.edge_targets.tolist()
    if any(not 0 <= s < target_start for s in sources):
        problems.append("an edge leaves a target node or points outside the graph")
    if any(not (0 <= t < error_start or target_start <= t < n_nodes) for t in targets):
        problems.append("an edge enters an error/token node or points outside the graph")
    if n_features and int(graph.features[:, 0].max()) >= graph.n_layers:
        problems.append("a feature layer >= n_layers")
    tensors = {
        name: getattr(graph, name)
        for name in ("activations", "edge_weights", "target_vectors", "target_probabilities")
    }
    finite = _finite_tensors(tensors)
    if finite:
        problems.append(finite)
    return {
        "n_layers": graph.n_layers,
        "n_pos": n_pos,
        "n_features": n_features,
        "n_targets": n_targets,
        "problems": problems,
    }


def _graph_check(summary: Summary, reference: Summary) -> str | None:
    if summary["problems"]:
        return "; ".join(summary["problems"])
    return _same(summary, reference, ("n_layers", "n_pos"))


def _build_graph_safetensors(root: Path) -> Path:
    _reference_graph().save(root / "graph.safetensors")
    return root / "graph.safetensors"


def _load_graph_safetensors(path: Path) -> Summary:
    from tracewire.graph import Graph

    return _graph_summary(Graph.load(path))


def _neuronpedia_document() -> dict[str, Any]:
    from tracewire.graph.neuronpedia import to_neuronpedia_json
    from tracewire.graph.pruning import keep_all

    graph = _reference_graph()
    document = to_neuronpedia_json(graph, "fuzz", prune=keep_all(graph))
    document["metadata"]["d_model"] = 8
    return document


def _build_graph_json(root: Path) -> Path:
    (root / "graph.json").write_text(json.dumps(_neuronpedia_document()))
    return root / "graph.json"


def _build_graph_json_gz(root: Path) -> Path:
    (root / "graph.json.gz").write_bytes(gzip.compress(json.dumps(_neuronpedia_document()).encode(), mtime=0))
    return root / "graph.json.gz"


def _load_graph_json(path: Path) -> Summary:
    from tracewire.graph.neuronpedia import from_neuronpedia_json

    return _graph_summary(from_neuronpedia_json(path))


def _gz_json_field(rng: random.Random, path: Path) -> str:
    document = json.loads(gzip.decompress(path.read_bytes()))
    document, what = m.mutate_tree(rng, document)
    try:
        text = json.dumps(document)
    except RecursionError:
        text = "[" * 100000
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return f"gz {what}"


_BOMB: bytes | None = None


def _gz_bomb(rng: random.Random, path: Path) -> str:
    """A small .gz that inflates past every cap (built once, ~300 KB for 300 MB of spaces)."""
    global _BOMB
    if _BOMB is None:
        import zlib

        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b" " * (1 << 20)
        _BOMB = b"".join(compressor.compress(block) for _ in range(300)) + compressor.flush()
    path.write_bytes(_BOMB)
    return "gzip bomb (300 MB of spaces)"


def _d_model_bomb(rng: random.Random, path: Path) -> str:
    document = json.loads(path.read_text())
    document["metadata"]["d_model"] = rng.choice([5 * 10**7, 2**31, 10**18])
    path.write_text(json.dumps(document))
    return f"metadata.d_model = {document['metadata']['d_model']}"


def _build_graph_pt(root: Path) -> Path:
    from tests.graph.test_circuit_tracer_pt import circuit_tracer_dict

    torch.save(circuit_tracer_dict(_reference_graph(), old_style=True), root / "graph.pt")
    return root / "graph.pt"


def _pt_field(rng: random.Random, path: Path) -> str:
    data = torch.load(path, weights_only=True)
    key = rng.choice(sorted(data))
    value = data[key]
    choice = rng.random()
    if isinstance(value, torch.Tensor) and choice < 0.3 and value.numel():
        value = value.clone().double()
        value.view(-1)[rng.randrange(value.numel())] = rng.choice([math.nan, math.inf, 1e30, -5.0, 2**40])
        data[key] = (
            value if key in ("adjacency_matrix", "activation_values", "logit_probabilities") else value.long()
        )
        what = "one hostile value"
    elif isinstance(value, torch.Tensor) and choice < 0.5:
        data[key] = value.reshape(-1)[: rng.randint(0, 3)]
        what = "shape changed"
    elif choice < 0.7:
        data[key] = rng.choice([None, "x", 3, [1, 2], {"n_layers": 10**8}, torch.zeros(2, 2, 2)])
        what = "replaced"
    elif choice < 0.85:
        data["cfg"] = {"n_layers": rng.choice(m.HOSTILE_SIZES), "d_model": rng.choice(m.HOSTILE_SIZES)}
        key, what = "cfg", "hostile sizes"
    else:
        del data[key]
        what = "removed"
    torch.save(data, path)
    return f"graph.pt {key}: {what}"


def _load_graph_pt(path: Path) -> Summary:
    from tracewire.graph.circuit_tracer_pt import load_circuit_tracer_pt

    return _graph_summary(load_circuit_tracer_pt(path))


# ------------------------------------------------------------------------------ checkpoints

CKPT_STEP = 4


def _build_checkpoint(root: Path) -> Path:
    from tracewire.training.checkpoint import save_checkpoint

    generator = torch.Generator().manual_seed(0)
    tensors = {
        "module.W_enc": torch.randn(2, 8, 4, generator=generator),
        "module.b_enc": torch.randn(2, 8, generator=generator),
        "adam.W_enc.exp_avg": torch.randn(2, 8, 4, generator=generator),
        "adam.W_enc.exp_avg_sq": torch.rand(2, 8, 4, generator=generator),
        "adam.W_enc.step": torch.tensor(4.0),
        "fire_ema": torch.rand(2, 8, generator=generator),
        "last_fired": torch.arange(16).reshape(2, 8),
        "rng.torch": torch.get_rng_state(),
    }
    state = {"config": {"kind": "plt", "features": 8, "lr": 0.01}, "next_step": CKPT_STEP, "curves": []}
    save_checkpoint(root, CKPT_STEP, tensors, state)
    return root


def _load_checkpoint(path: Path) -> Summary:
    from tracewire.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    if checkpoint is None:
        return {"step": None, "shapes": {}, "tensors": {}}
    shapes = {name: tuple(t.shape) for name, t in checkpoint.tensors.items()}
    return {"step": checkpoint.step, "shapes": shapes, "tensors": checkpoint.tensors}


def _checkpoint_check(summary: Summary, reference: Summary) -> str | None:
    if summary["step"] is None:
        return None  # no latest.json: "no checkpoint", which is what the folder says
    return _same(summary, reference, ("step", "shapes")) or _finite_tensors(summary["tensors"])


# ------------------------------------------------------------------------------ corpus


def _build_corpus(root: Path) -> Path:
    from tests.corpus.fixtures import build_fixture_corpus

    build_fixture_corpus(root / "build", n_files=6, words=40)
    shutil.move(root / "build" / "corpus", root / "corpus")
    shutil.rmtree(root / "build")
    return root / "corpus"


def _load_corpus(path: Path) -> Summary:
    from tracewire.corpus import TokenCorpus

    corpus = TokenCorpus(path)
    seq_len = 8
    windows = corpus.batch(range(corpus.n_windows(seq_len)), seq_len) if corpus.n_windows(seq_len) else None
    n_docs = int(corpus.documents.shape[0])
    sources = {corpus.source_at(int(corpus.documents[i, 0])) for i in range(n_docs)}
    return {
        "n_tokens": corpus.n_tokens,
        "max_token": int(windows.max()) if windows is not None else -1,
        "vocab_size": int(corpus.manifest["vocab_size"]),
        "sources": sorted(sources),
        "n_documents": n_docs,
    }


def _corpus_check(summary: Summary, reference: Summary) -> str | None:
    if summary["max_token"] >= summary["vocab_size"]:
        return f"token id {summary['max_token']} >= vocab_size {summary['vocab_size']}"
    return _same(summary, reference, ("n_tokens",))


# ------------------------------------------------------------------------------ feature stores


def _build_store(root: Path) -> Path:
    from tracewire.dashboards.store import ExampleRows, FeatureRecord, FeatureStore

    path = root / "features.sqlite"
    rng = np.random.default_rng(0)
    with FeatureStore(path) as store:
        store.write_meta({"n_tokens": 100, "build": {"scan": "fuzz"}, "vocab_size": 20})
        store.write_vocab([f"t{i}" for i in range(20)])
        records = []
        for feature in range(3):
            m_rows, width = 4, 5
            examples = ExampleRows(
                grp=np.array([0, 0, 1, 1]),
                rank=np.array([0, 1, 0, 1]),
                position=np.arange(m_rows) * 7,
                center=np.full(m_rows, 2),
                activation=rng.random(m_rows),
                token_ids=rng.integers(0, 20, (m_rows, width)).astype(np.int32),
                acts=rng.random((m_rows, width)).astype(np.float32),
            )
            records.append(
                FeatureRecord(
                    layer=feature % 2,
                    feature=feature,
                    activation_count=5,
                    n_tokens=100,
                    act_min=0.1,
                    act_max=0.9,
                    act_sum=2.0,
                    histogram=np.array([2, 3]),
                    quantile_values=np.linspace(0, 1, 100, dtype=np.float32),
                    groups=[
                        {"name": "top", "lower": 0.5, "upper": 0.9},
                        {"name": "q1", "lower": 0.1, "upper": 0.5},
                    ],
                    top_logit_ids=np.array([1, 2]),
                    top_logit_values=np.array([0.5, 0.4]),
                    bottom_logit_ids=np.array([3]),
                    bottom_logit_values=np.array([-0.2]),
                    auto_label="fuzz",
                    examples=examples,
                )
            )
        store.put_features(records)
        store.set_label(0, 0, "a label")
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    return path


def _load_store(path: Path) -> Summary:
    from tracewire.dashboards.store import FeatureStore

    values: list[float] = []
    with FeatureStore(path, readonly=True, query_time_limit=2.0) as store:
        features = store.features()
        for layer, feature in features:
            card = store.card(layer, feature)
            assert card is not None
            values += [card.act_min, card.act_max, card.act_sum, *card.quantile_values]
            values += [value for _, value in card.top_logits + card.bottom_logits]
            for group in card.groups:
                for example in group.examples:
                    values += example.acts
                    values.append(example.activation)
        labels = store.labels()
    return {"n_features": len(features), "values": values, "labels": len(labels)}


def _store_check(summary: Summary, reference: Summary) -> str | None:
    if not all(math.isfinite(v) for v in summary["values"]):
        return "a card holds NaN or infinite values"
    return None


def _store_files(rng: random.Random, path: Path) -> str:
    return m.sqlite_edit(rng, path)


# ------------------------------------------------------------------------------ the table

SQLITE_MUTATORS = (_store_files,) * 6 + m.BYTE_MUTATORS
NPY_MUTATORS = (m.npy_header, m.npy_header, m.npy_header, *m.BYTE_MUTATORS)

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "transcoders-plt",
            _build_plt,
            {
                "config.yaml": YAML_MUTATORS,
                "layer_0.safetensors": SAFETENSORS_MUTATORS,
                "layer_1.safetensors": SAFETENSORS_MUTATORS,
            },
            _transcoder_summary,
            _transcoder_check,
            (_rename_layer("layer_{}.safetensors"), _listed_layers),
        ),
        Target(
            "transcoders-clt",
            _build_clt,
            {
                "config.yaml": YAML_MUTATORS,
                "W_enc_0.safetensors": SAFETENSORS_MUTATORS,
                "W_dec_1.safetensors": SAFETENSORS_MUTATORS,
            },
            _transcoder_summary,
            _transcoder_check,
            (_rename_layer("W_enc_{}.safetensors"), _rename_layer("W_dec_{}.safetensors")),
        ),
        Target(
            "transcoders-gemmascope",
            _build_gemmascope,
            {
                "layer_0/params.npz": (m.npz_member,) * 4 + m.BYTE_MUTATORS,
                "layer_1/params.npz": (m.npz_member,) * 4 + m.BYTE_MUTATORS,
            },
            _transcoder_summary,
            _transcoder_check,
            (_rename_gemmascope_layer,),
        ),
        Target(
            "graph-safetensors",
            _build_graph_safetensors,
            {"graph.safetensors": SAFETENSORS_MUTATORS},
            _load_graph_safetensors,
            _graph_check,
        ),
        Target(
            "graph-json",
            _build_graph_json,
            {"graph.json": (*JSON_MUTATORS, _d_model_bomb, _d_model_bomb)},
            _load_graph_json,
            _graph_check,
        ),
        Target(
            "graph-json-gz",
            _build_graph_json_gz,
            {"graph.json.gz": (_gz_json_field, _gz_json_field, _gz_json_field, _gz_bomb, *m.BYTE_MUTATORS)},
            _load_graph_json,
            _graph_check,
        ),
        Target(
            "graph-pt",
            _build_graph_pt,
            {"graph.pt": (_pt_field,) * 6 + m.BYTE_MUTATORS},
            _load_graph_pt,
            _graph_check,
        ),
        Target(
            "checkpoint",
            _build_checkpoint,
            {
                "latest.json": JSON_MUTATORS,
                f"step-{CKPT_STEP:08d}.json": JSON_MUTATORS,
                f"step-{CKPT_STEP:08d}.safetensors": SAFETENSORS_MUTATORS,
            },
            _load_checkpoint,
            _checkpoint_check,
        ),
        Target(
            "corpus",
            _build_corpus,
            {"manifest.json": JSON_MUTATORS, "tokens-00000.npy": NPY_MUTATORS, "documents.npy": NPY_MUTATORS},
            _load_corpus,
            _corpus_check,
        ),
        Target(
            "feature-store", _build_store, {"features.sqlite": SQLITE_MUTATORS}, _load_store, _store_check
        ),
    )
}
