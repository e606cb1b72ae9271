"""The attribution engine against independent ground truth (tiny random models, fp32)."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.attribution.oracle import graph_dense, jacobian_adjacency, perturbation_adjacency
from tests.factories.models import ARCHS, random_ids, tiny_model
from tracewire.attribution.engine import attribute
from tracewire.attribution.targets import CustomTarget, LogitDifference
from tracewire.replacement.model import ReplacementModel
from tracewire.transcoders.synthetic import random_clt, random_plt

KINDS = ("plt", "skip", "clt")
ACTIVATIONS = ("jumprelu", "relu", "topk")


def _setup(arch: str, kind: str, activation: str, *, seed: int = 0, d_tc: int = 24):
    lm = tiny_model(arch, seed=seed)
    maker = random_clt if kind == "clt" else random_plt
    ts = maker(3, lm.d_model, d_tc, activation=activation, skip=kind == "skip", seed=seed)
    return ReplacementModel(lm, ts)


def _check_edges(graph, expected, *, atol=1e-5, rtol=1e-4) -> None:
    got = graph_dense(graph)
    # every graph edge is right, and no edge is missing
    assert torch.allclose(got, expected, atol=atol, rtol=rtol), (got - expected).abs().max()
    assert graph.n_edges > 0


@pytest.mark.parametrize("contraction", ["blocks", "dense"])
@pytest.mark.parametrize(("arch", "kind", "activation"), list(itertools.product(ARCHS, KINDS, ACTIVATIONS)))
def test_every_edge_equals_a_frozen_model_intervention(
    arch: str, kind: str, activation: str, contraction: str
) -> None:
    """Both feature-edge contractions (padded blocks, dense GEMM + gather) against the oracle."""
    rm = _setup(arch, kind, activation)
    graph = attribute(random_ids(6, seed=1), rm, progress=False, batch_size=16, contraction=contraction)
    assert graph.metadata["settings"]["contraction"] == contraction
    assert graph.n_features > 10
    _check_edges(graph, perturbation_adjacency(rm, graph))


@pytest.mark.parametrize(
    ("arch", "kind"), [("llama", "skip"), ("gemma2", "clt"), ("gpt2", "plt"), ("qwen3", "clt")]
)
def test_edges_match_a_brute_force_jacobian(arch: str, kind: str) -> None:
    rm = _setup(arch, kind, "jumprelu", seed=2)
    graph = attribute(random_ids(5, seed=3), rm, progress=False)
    _check_edges(graph, jacobian_adjacency(rm, graph))


def test_batch_size_and_target_order_do_not_matter() -> None:
    rm = _setup("gemma3", "clt", "relu", seed=4)
    ids = random_ids(7, seed=5)
    base = graph_dense(attribute(ids, rm, progress=False, batch_size=64))
    for batch_size in (1, 3, 7):
        other = graph_dense(attribute(ids, rm, progress=False, batch_size=batch_size))
        assert torch.allclose(base, other, atol=1e-6, rtol=1e-5)
    tokens = [5, 9, 11]
    a = attribute(ids, rm, targets=tokens, progress=False)
    b = attribute(ids, rm, targets=tokens[::-1], progress=False)
    dense_a, dense_b = graph_dense(a), graph_dense(b)
    n = a.n_nodes
    for k, vocab in enumerate(tokens):
        kb = tokens[::-1].index(vocab)
        assert torch.allclose(dense_a[n - 3 + k], dense_b[n - 3 + kb], atol=1e-6)


def test_bf16_close_to_fp32() -> None:
    """bf16 rows agree with fp32 within 5% of the largest edge of each row (bf16 has 8 mantissa bits)."""
    rm32 = _setup("llama", "skip", "relu", seed=6)
    ids = random_ids(6, seed=7)
    g32 = attribute(ids, rm32, targets=[5], progress=False)
    lm16 = tiny_model("llama", seed=6, dtype=torch.bfloat16)
    ts16 = random_plt(3, lm16.d_model, 24, activation="relu", skip=True, seed=6, dtype=torch.bfloat16)
    g16 = attribute(ids, ReplacementModel(lm16, ts16), targets=[5], progress=False)
    d32 = graph_dense(g32)
    target = g32.n_nodes - 1
    row32 = d32[target]
    row16 = graph_dense(g16)[g16.n_nodes - 1]
    # compare error and token columns (their node ids do not depend on which features are active)
    tail32, tail16 = row32[g32.n_features : target], row16[g16.n_features : g16.n_nodes - 1]
    scale = tail32.abs().max()
    assert (tail32 - tail16).abs().max() <= 0.05 * scale


def test_budget_selects_the_most_influential_features() -> None:
    from tracewire.graph.influence import node_influence

    rm = _setup("llama", "plt", "relu", seed=8, d_tc=48)
    ids = random_ids(8, seed=9)
    full = attribute(ids, rm, progress=False)
    budget = 40
    part = attribute(ids, rm, progress=False, max_feature_nodes=budget, batch_size=8, update_interval=1)
    assert part.n_features == budget
    influence = node_influence(full)[: full.n_features]
    top = {tuple(f) for f in full.features[influence.topk(budget).indices].tolist()}
    chosen = {tuple(f) for f in part.features.tolist()}
    assert len(top & chosen) / budget >= 0.9
    # edges among the chosen nodes equal those of the full graph
    assert part.metadata["influence_refreshes"] >= 2


def test_custom_and_chosen_targets() -> None:
    rm = _setup("qwen2", "skip", "jumprelu", seed=10)
    lm = rm.loaded
    ids = random_ids(6, seed=11)
    chosen = attribute(ids, rm, targets=["Paris", 9], progress=False)
    assert chosen.target_labels[0] == "Paris" and chosen.target_token_ids.tolist() == [7, 9]
    diff = attribute(ids, rm, targets=[LogitDifference("Paris - w9", "Paris", 9)], progress=False)
    dense_c, dense_d = graph_dense(chosen), graph_dense(diff)
    n = chosen.n_nodes
    assert torch.equal(chosen.features, diff.features)
    n_src = n - 2  # features, errors, tokens: the same nodes in both graphs
    want = dense_c[n - 2, :n_src] - dense_c[n - 1, :n_src]
    assert torch.allclose(dense_d[diff.n_nodes - 1, :n_src], want, atol=1e-5)
    # chosen-token rows are the demeaned unembedding rows: equal to a custom direction with that vector
    unembed = lm.adapter.unembedding_matrix(lm.model)
    vec = unembed[:, 7] - unembed.mean(dim=1)
    custom = attribute(ids, rm, targets=[CustomTarget("Paris (custom)", vec)], progress=False)
    assert torch.allclose(graph_dense(custom)[custom.n_nodes - 1, :n_src], dense_c[n - 2, :n_src], atol=1e-5)


def test_multi_token_target_is_an_error() -> None:
    from tracewire.errors import TargetError

    rm = _setup("llama", "plt", "relu")
    with pytest.raises(TargetError, match=r"not a single token"):
        attribute(random_ids(5), rm, targets=["Paris Texas"], progress=False)


def test_salient_logits_cover_the_probability_mass() -> None:
    rm = _setup("llama", "plt", "relu")
    graph = attribute(random_ids(5), rm, progress=False, desired_logit_prob=0.5, max_n_logits=7)
    probs = graph.target_probabilities
    assert 1 <= len(probs) <= 7
    assert probs.sum() >= 0.5 or len(probs) == 7
    assert probs[:-1].sum() < 0.5
    assert torch.all(probs[:-1] >= probs[1:])


def test_save_load_round_trip_and_corruption(tmp_path) -> None:
    from tracewire.errors import GraphFormatError
    from tracewire.graph.graph import Graph

    rm = _setup("gpt2", "clt", "topk")
    graph = attribute(random_ids(6), rm, progress=False)
    path = tmp_path / "g.safetensors"
    graph.save(path)
    loaded = Graph.load(path)
    for name in (
        "tokens",
        "features",
        "activations",
        "edge_targets",
        "edge_sources",
        "edge_weights",
        "target_vectors",
    ):
        assert torch.equal(getattr(loaded, name), getattr(graph, name))
    assert loaded.metadata["work"] == graph.metadata["work"]
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphFormatError, match=r"cut\.safetensors"):
        Graph.load(tmp_path / "cut.safetensors")


def test_causal_cone_does_less_work_than_the_reference() -> None:
    rm = _setup("llama", "plt", "relu", d_tc=48)
    graph = attribute(random_ids(12, seed=1), rm, progress=False, batch_size=16)
    from benchmarks.attribution import reference_work  # circuit-tracer's tally lives in the benchmark

    work = graph.metadata["work"]
    assert work["position_layers_touched"] < reference_work(graph, 16)


@pytest.mark.parametrize(
    ("arch", "input_hook", "output_hook"),
    [
        ("llama", "hook_resid_mid", "hook_mlp_out"),
        ("gemma2", "ln2.hook_normalized", "hook_mlp_out"),  # output after Gemma's post-MLP norm
        ("gemma3", "hook_resid_mid", "mlp.hook_out"),  # post-MLP norm frozen, not replaced
        ("gpt2", "hook_resid_mid", "hook_mlp_out"),
    ],
)
def test_other_transcoder_sites(arch: str, input_hook: str, output_hook: str) -> None:
    lm = tiny_model(arch, seed=12)
    ts = random_plt(
        3,
        lm.d_model,
        24,
        activation="relu",
        skip=True,
        seed=12,
        feature_input_hook=input_hook,
        feature_output_hook=output_hook,
    )
    rm = ReplacementModel(lm, ts)
    ids = random_ids(6, seed=13)
    with torch.no_grad():
        reference = lm.model(ids[None]).logits
    assert (rm.record(ids).logits - reference).abs().max() <= 1e-6
    graph = attribute(ids, rm, progress=False)
    _check_edges(graph, perturbation_adjacency(rm, graph))


def test_no_bos_no_zeroed_position() -> None:
    """Without a BOS token nothing is zeroed: position 0 has features and a non-zero error."""
    rm = _setup("llama", "skip", "relu")
    rm.loaded.bos_token_id = None
    ids = random_ids(5, seed=14)
    ids[0] = 9
    graph = attribute(ids, rm, progress=False)
    assert graph.metadata["zero_positions"] == []
    assert (graph.features[:, 1] == 0).any()
    _check_edges(graph, perturbation_adjacency(rm, graph))


@pytest.mark.parametrize("kind", ["clt", "plt"])
@pytest.mark.parametrize("chunk_bytes", [1, 6000, 2**20])  # one position, a few, all per group
def test_on_the_fly_decoder_blocks_match_cached_ones(
    monkeypatch: pytest.MonkeyPatch, kind: str, chunk_bytes: int
) -> None:
    """Long prompts build decoder blocks per group of positions (busiest first) instead of
    caching whole layers; the edges are the cached blocks' to fp32 rounding."""
    import tracewire.attribution.components as components

    rm = _setup("llama", kind, "relu", seed=15)
    ids = random_ids(9, seed=16)
    cached = graph_dense(attribute(ids, rm, progress=False, contraction="blocks"))
    monkeypatch.setattr(components, "BLOCK_CACHE_BYTES", 0)
    monkeypatch.setattr(components, "BLOCK_CHUNK_BYTES", chunk_bytes)
    grouped = graph_dense(attribute(ids, rm, progress=False, contraction="blocks"))
    assert cached.abs().max() > 0
    assert torch.allclose(cached, grouped, atol=1e-6)


def test_row_cap_keeps_each_rows_largest_feature_edges() -> None:
    rm = _setup("llama", "plt", "relu", seed=6)
    ids = random_ids(6, seed=7)
    full = attribute(ids, rm, progress=False, max_row_feature_edges=None)
    cap = 5
    capped = attribute(ids, rm, progress=False, max_row_feature_edges=cap)
    a, b = graph_dense(full), graph_dense(capped)
    n_feat = full.n_features
    assert torch.equal(full.features, capped.features)
    # errors, tokens: every edge kept and unchanged
    assert torch.equal(a[:, n_feat:], b[:, n_feat:])
    dropped = total = 0.0
    for row in range(a.shape[0]):
        feature_edges = a[row, :n_feat]
        total += float(a[row].abs().sum())
        if not bool(feature_edges.any()):
            continue
        kept = b[row, :n_feat]
        assert int((kept != 0).sum()) == min(cap, int((feature_edges != 0).sum()))
        # the kept ones are the row's largest |edges|, with their exact values
        assert torch.equal(kept[kept != 0], feature_edges[kept != 0])
        smallest_kept = kept[kept != 0].abs().min()
        assert bool((feature_edges[kept == 0].abs() <= smallest_kept).all())
        dropped += float(feature_edges[kept == 0].abs().sum())
    assert capped.metadata["dropped_edge_mass_fraction"] > 0
    # the recorded fraction is over the rows computed (visited features' rows are graph rows here)
    assert capped.metadata["dropped_edge_mass_fraction"] == pytest.approx(dropped / total, rel=1e-4)


def test_dense_and_coo_row_storage_agree() -> None:
    from tracewire.attribution.rows import RowBatch

    torch.manual_seed(0)
    values = torch.randn(3, 7)
    values[values.abs() < 0.5] = 0.0
    cols = torch.tensor([10, 11, 12, 20, 21, 30, 31], dtype=torch.int32)
    common = dict(
        row_nodes=torch.tensor([100, 101, 102]),
        abs_sums=values.abs().sum(-1),
        dropped_abs=torch.zeros(3),
        work=0,
    )
    dense = RowBatch(row_index=None, cols=cols, values=values, **common)
    b_idx, j_idx = values.nonzero(as_tuple=True)
    coo = RowBatch(row_index=b_idx.to(torch.int32), cols=cols[j_idx], values=values[b_idx, j_idx], **common)
    remap = torch.full((200,), -1, dtype=torch.long)
    remap[torch.tensor([11, 20, 31])] = torch.tensor([0, 1, 2])
    for got, want in zip(dense.select(remap), coo.select(remap)):
        assert torch.equal(got, want)
    rows_d, cols_d, vals_d = dense.coo()
    mask = vals_d != 0
    for got, want in zip((rows_d[mask], cols_d[mask], vals_d[mask]), coo.coo()):
        assert torch.equal(got, want)
    assert dense.nbytes < coo.nbytes * 2


def test_coo_and_dense_batches_give_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracewire.attribution import rows

    rm = _setup("qwen2", "clt", "jumprelu", seed=8)
    ids = random_ids(6, seed=9)
    dense = attribute(ids, rm, progress=False, max_feature_nodes=20, batch_size=4)
    monkeypatch.setattr(rows, "DENSE_MIN_FILL", 2.0)  # never dense
    coo = attribute(ids, rm, progress=False, max_feature_nodes=20, batch_size=4)
    assert torch.equal(dense.features, coo.features)
    assert torch.equal(graph_dense(dense), graph_dense(coo))


@pytest.mark.parametrize("storage", ["dense", "coo", "capped"])
def test_rows_packaged_a_slice_at_a_time_give_the_same_graph(
    monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    """A batch's rows are capped and stored a slice of rows at a time (bounding the batch's
    temporaries); one row per slice gives the graph of whole-batch slices, bit for bit, with the
    same dropped-mass bookkeeping — for dense rows, COO rows and capped rows."""
    from tracewire.attribution import rows

    rm = _setup("llama", "clt", "relu", seed=17)
    ids = random_ids(7, seed=18)
    cap = 4 if storage == "capped" else None
    if storage == "coo":
        monkeypatch.setattr(rows, "DENSE_MIN_FILL", 2.0)  # never dense
    kwargs = dict(progress=False, batch_size=8, max_row_feature_edges=cap)
    whole = attribute(ids, rm, **kwargs)
    monkeypatch.setattr(rows, "PACKAGE_SLICE_BYTES", 1)  # one row per slice
    sliced = attribute(ids, rm, **kwargs)
    assert whole.n_edges > 0 and torch.equal(whole.features, sliced.features)
    assert torch.equal(graph_dense(whole), graph_dense(sliced))
    dropped = whole.metadata["dropped_edge_mass_fraction"]
    assert (dropped > 0) == (storage == "capped")
    assert sliced.metadata["dropped_edge_mass_fraction"] == pytest.approx(dropped, rel=1e-6)


def test_short_batches_on_their_own_replay_give_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch filling at most half of its shared replay (here the targets' batch and the last
    feature batch) replays a prefix of its own; the edges are those of the shared replay."""
    from tracewire.attribution import rows

    rm = _setup("qwen3", "clt", "relu", seed=19)
    ids = random_ids(8, seed=20)
    calls: list[bool] = []
    decide = rows._own_replay_pays

    def spy(*args: object) -> bool:
        calls.append(decide(*args))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(rows, "_own_replay_pays", spy)
    own = attribute(ids, rm, progress=False, batch_size=16, max_feature_nodes=20)
    assert any(calls) and not all(calls)  # both kinds of replay were used
    monkeypatch.setattr(rows, "_own_replay_pays", lambda *args: False)
    shared = attribute(ids, rm, progress=False, batch_size=16, max_feature_nodes=20)
    assert torch.equal(own.features, shared.features)
    assert torch.allclose(graph_dense(own), graph_dense(shared), atol=1e-6)
    assert own.metadata["work"]["replay_forwards"] > shared.metadata["work"]["replay_forwards"]


def test_row_orders_give_the_same_graph_and_the_least_work_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every feature's row in each of the three orders gives the same graph; the run takes the
    order with the least planned work, which here (every feature of 16 positions, spread over
    replay lengths 1–16 and over layers) is the one grouped by replay length, then layer."""
    from tracewire.attribution import runner

    rm = _setup("llama", "plt", "relu", d_tc=48, seed=1)
    ids = random_ids(16, seed=3)
    orders = runner.row_orders
    graphs, works = {}, {}
    for name in ("position", "layer", "replay length"):
        monkeypatch.setattr(
            runner, "row_orders", lambda comps, features, name=name: {name: orders(comps, features)[name]}
        )
        graph = attribute(ids, rm, progress=False, batch_size=16, update_interval=1000)
        graphs[name], works[name] = graph, graph.metadata["work"]["position_layers_touched"]
    monkeypatch.setattr(runner, "row_orders", orders)
    chosen = attribute(ids, rm, progress=False, batch_size=16, update_interval=1000)
    assert works["replay length"] < min(works["position"], works["layer"])
    assert chosen.metadata["work"]["position_layers_touched"] == works["replay length"]
    reference = graph_dense(chosen)
    for graph in graphs.values():
        torch.testing.assert_close(graph_dense(graph), reference, rtol=1e-5, atol=1e-6)
