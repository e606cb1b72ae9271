"""The build against a reference: feature k of the test transcoders fires exactly on its token k."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.dashboards.conftest import BATCH_WINDOWS, CONFIG, TOKENS, build
from tests.dashboards.token_features import LOGIT_OF, N_LAYERS, TOKEN_OF, reference_activations
from tests.factories.models import VOCAB
from tracewire.dashboards import FeatureSelection, FeatureStore, FeatureStoreError
from tracewire.dashboards.card import FeatureCard


@pytest.fixture(scope="module")
def reference(token_setup, corpus):
    """Token ids ``[n_windows, seq]`` of the windows the build reads, and per-layer activations."""
    loaded, transcoders = token_setup
    seq = CONFIG.seq_len
    n_windows = -(-TOKENS // (seq - 1))
    ids = corpus.batch(range(n_windows), seq)
    return ids, reference_activations(loaded, transcoders, ids)


def stream_positions(mask: torch.Tensor, seq: int) -> torch.Tensor:
    """Corpus-stream index of each True (window, pos) of ``mask [n_windows, seq]``."""
    window, pos = mask.nonzero(as_tuple=True)
    return window * (seq - 1) + pos - 1


def test_feature_k_fires_exactly_on_token_k(reference):
    ids, acts = reference
    for layer in range(N_LAYERS):
        expected = torch.stack([ids == TOKEN_OF[layer][k] for k in range(VOCAB)], dim=-1)
        expected[:, 0] = False
        assert torch.equal(acts[layer] > 0, expected)


@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_cards_match_the_reference(built_store: Path, reference, corpus, layer: int):
    ids, acts = reference
    seq, width = CONFIG.seq_len, CONFIG.window
    n_tokens = ids.shape[0] * (seq - 1)
    with FeatureStore(built_store, readonly=True) as store:
        assert store.n_tokens == n_tokens
        for k in range(VOCAB):
            card = store.card(layer, k)
            assert card is not None
            token = TOKEN_OF[layer][k]
            a = acts[layer][..., k]
            fired = a > 0
            count = int(fired.sum())
            assert card.activation_count == count
            assert card.activation_frequency == pytest.approx(count / n_tokens)
            assert sum(card.histogram) == count  # histogram counts sum to the firing count
            assert len(card.histogram) == CONFIG.n_hist_bins
            if count == 0:
                assert card.label.startswith("(never fired") and not card.top_examples
                assert all(not g.examples for g in card.groups)
                continue
            values = a[fired]
            assert card.act_max == pytest.approx(float(values.max()))
            assert card.act_min == pytest.approx(float(values.min()))
            assert card.act_sum == pytest.approx(float(values.double().sum()), rel=1e-6)
            # Top examples: the n_top highest activations, each a window around an occurrence of the token.
            best = values.sort(descending=True).values[: CONFIG.n_top]
            top = card.top_examples
            assert [e.activation for e in top] == pytest.approx(best.tolist())
            firing_positions = set(stream_positions(fired, seq).tolist())
            for example in top:
                check_example(example, token, firing_positions, corpus, acts[layer][..., k], seq, width)
            # Quantile groups: the right activations in each, drawn from the firing events.
            check_quantile_groups(
                card, values, firing_positions, corpus, acts[layer][..., k], seq, width, token
            )
            assert card.top_logits[0][0] == corpus.text_of([LOGIT_OF[layer][k]])


def check_example(example, token, firing_positions, corpus, feature_acts, seq, width):
    assert len(example.tokens) == len(example.acts) == width
    assert example.token_ids[example.center] == token
    assert example.position in firing_positions
    start = example.position - example.center
    assert example.token_ids == corpus.tokens(start, start + width).tolist()
    # per-token activations of the window = the reference at those corpus positions
    window, pos = divmod(example.position, seq - 1)
    first_pos = pos + 1 - example.center
    expected = feature_acts[window, first_pos : first_pos + width]
    assert example.acts == pytest.approx(expected.tolist(), abs=1e-5)
    assert example.acts[example.center] == pytest.approx(example.activation)
    assert all((a > 0) == (t == token) for a, t in zip(example.acts, example.token_ids))


def assert_percentile(values: torch.Tensor, value: float, fraction: float, tolerance: float) -> None:
    """``value`` splits ``values`` at ``fraction`` of their count, give or take ``tolerance``."""
    at_most = int((values.double() <= value + tolerance).sum())
    below = int((values.double() < value - tolerance).sum())
    assert below <= fraction * len(values) <= at_most, (value, fraction, values.sort().values.tolist())


def check_quantile_groups(
    card: FeatureCard, values, firing_positions, corpus, feature_acts, seq, width, token
):
    n_q = CONFIG.n_quantiles
    groups = card.groups[1:]
    assert len(groups) == n_q
    # Group bounds: the percentiles 100 i / n_q of the firing activations, to one running bin.
    fine_width = 2 * card.act_max / CONFIG.n_fine_bins
    edges = [groups[n_q - 1 - i].lower for i in range(n_q)] + [groups[0].upper]
    assert edges[0] == pytest.approx(card.act_min) and edges[-1] == pytest.approx(card.act_max)
    for i in range(1, n_q):
        assert_percentile(values, edges[i], i / n_q, fine_width)
    # quantile_values: percentiles 1..100, non-decreasing, the last = act_max
    q = card.quantile_values
    assert len(q) == 100 and q == sorted(q) and q[-1] == pytest.approx(card.act_max)
    for p in (10, 50, 90):
        assert_percentile(values, q[p - 1], p / 100, fine_width)
    n_shown = 0
    for group in groups:
        assert len(group.examples) <= CONFIG.per_quantile
        for example in group.examples:
            assert group.lower <= example.activation <= group.upper
            if group is not groups[-1]:
                assert example.activation > group.lower
            check_example(example, token, firing_positions, corpus, feature_acts, seq, width)
        activations = [e.activation for e in group.examples]
        assert activations == sorted(activations, reverse=True)
        n_shown += len(group.examples)
        # a group is empty only if it has no firing activation in its range
        in_range = int(((values > group.lower) & (values <= group.upper)).sum())
        if in_range and group.examples == []:
            pytest.fail(f"group {group.name} is empty but {in_range} activations lie in its range")
    assert n_shown >= min(len(values), CONFIG.per_quantile)


def test_card_json_has_the_frontend_and_tracewire_fields(built_store: Path):
    from tracewire.graph.neuronpedia_ids import cantor_pair

    with FeatureStore(built_store, readonly=True) as store:
        card = store.card(1, 10)
        assert card is not None
        data = card.to_json()
    frontend = {"index", "examples_quantiles", "top_logits", "bottom_logits", "act_min", "act_max",
                "quantile_values", "histogram", "activation_frequency", "transcoder_id"}  # fmt: skip
    extras = {"layer", "feature", "label", "auto_label", "user_label", "activation_count", "top_examples"}
    assert frontend | extras <= set(data)
    assert data["index"] == cantor_pair(1, 10)
    assert data["transcoder_id"] == "tiny-token-features"
    assert data["examples_quantiles"][0]["quantile_name"] == "Top activations"
    example = data["examples_quantiles"][0]["examples"][0]
    assert set(example) >= {"tokens", "tokens_acts_list", "train_token_ind", "is_repeated_datapoint"}
    assert isinstance(example["tokens"][0], str) and isinstance(example["tokens_acts_list"][0], float)
    assert data["top_examples"] == data["examples_quantiles"][0]["examples"]
    assert len(data["top_logits"]) == CONFIG.n_logits and isinstance(data["top_logits"][0], str)
    # an example that also appears in the top group is flagged as repeated in the quantile groups
    top_positions = {e["position"] for e in data["top_examples"]}
    for group in data["examples_quantiles"][1:]:
        for e in group["examples"]:
            assert e["is_repeated_datapoint"] == (e["position"] in top_positions)


def all_cards(path: Path) -> dict[tuple[int, int], dict]:
    with FeatureStore(path, readonly=True) as store:
        return {key: store.card(*key).to_json() for key in store.features()}  # type: ignore[union-attr]


def test_interrupted_build_resumes_to_the_same_store(token_setup, corpus, built_store: Path, tmp_path: Path):
    path = tmp_path / "resumed.sqlite"

    def interrupt(batch: int) -> None:
        if batch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(token_setup, corpus, path, checkpoint_every=1, on_batch=interrupt)
    checkpoints = list(tmp_path.glob("resumed.sqlite.job-*.ckpt"))
    assert len(checkpoints) == 1
    report = build(token_setup, corpus, path, checkpoint_every=1)
    assert report.resumed_from_window == 2 * BATCH_WINDOWS
    assert not list(tmp_path.glob("*.ckpt"))
    assert all_cards(path) == all_cards(built_store)
    again = build(token_setup, corpus, path)  # nothing left to do
    assert again.features_written == 0 and again.features_skipped == N_LAYERS * VOCAB


def test_jobs_split_by_layer_and_feature_range_add_up(token_setup, corpus, built_store: Path, tmp_path: Path):
    path = tmp_path / "split.sqlite"
    everything = FeatureSelection.all(N_LAYERS)
    first = everything.restrict(range(1, 2), range(0, 40), d_transcoder=VOCAB)
    report = build(token_setup, corpus, path, selection=first)
    assert report.features_written == 40
    with FeatureStore(path, readonly=True) as store:
        assert store.features() == [(1, f) for f in range(40)]
    report = build(token_setup, corpus, path)  # the rest
    assert report.features_written == N_LAYERS * VOCAB - 40 and report.features_skipped == 40
    assert all_cards(path) == all_cards(built_store)


def test_a_store_refuses_cards_of_another_build(token_setup, corpus, built_store: Path, tmp_path: Path):
    path = tmp_path / "copy.sqlite"
    shutil.copy(built_store, path)
    with pytest.raises(FeatureStoreError, match=r"another build.*seq_len"):
        build(token_setup, corpus, path, config=CONFIG.__class__(**{**CONFIG.to_dict(), "seq_len": 48}))


def test_features_of_a_graph_only(token_setup, corpus, built_store: Path, tmp_path: Path):
    from tests.graph.factory import random_graph

    graph = random_graph(n_layers=N_LAYERS, n_pos=4, n_features=12, seed=3, vocab_size=VOCAB)
    graph.save(tmp_path / "g.safetensors")
    selection = FeatureSelection.from_graphs([tmp_path / "g.safetensors"])
    wanted = sorted({(int(layer), int(f)) for layer, _, f in graph.features.tolist()})
    path = tmp_path / "graph.sqlite"
    build(token_setup, corpus, path, selection=selection)
    cards = all_cards(path)
    assert sorted(cards) == wanted
    reference = all_cards(built_store)
    assert all(cards[key] == reference[key] for key in wanted)


def test_feature_list_parsing_and_errors():
    from tracewire.dashboards.selection import SelectionError, parse_range

    selection = FeatureSelection.parse("0:3, 0:5-7, 1")
    assert selection.ids(0, VOCAB).tolist() == [3, 5, 6, 7]
    assert selection.layers[1] is None and selection.count(VOCAB) == 4 + VOCAB
    with pytest.raises(SelectionError, match="'0:x'"):
        FeatureSelection.parse("0:x")
    with pytest.raises(SelectionError, match="out of range"):
        FeatureSelection.parse("5:1").validate(N_LAYERS, VOCAB)
    with pytest.raises(SelectionError, match="out of range"):
        FeatureSelection.parse("0:96").validate(N_LAYERS, VOCAB)
    assert parse_range("2-4", "--layers") == range(2, 5) and parse_range("0:8", "--feature-range") == range(
        0, 8
    )
    with pytest.raises(SelectionError, match="--layers"):
        parse_range("4-2", "--layers")


def test_tokens_are_drawn_from_the_corpus_windows_in_order(built_store: Path, reference):
    ids, _ = reference
    with FeatureStore(built_store, readonly=True) as store:
        build_info = store.meta["build"]
    assert build_info["windows"] == ids.shape[0] and build_info["tokens"] == ids.shape[0] * (
        CONFIG.seq_len - 1
    )
    assert np.all(ids[:, 0].numpy() == 0)  # every window starts with BOS, which is never counted


@pytest.mark.parametrize(("kind", "activation"), [("clt", "jumprelu"), ("plt", "topk")])
def test_other_transcoder_kinds(corpus, tmp_path: Path, kind: str, activation: str):
    """CLT (logits from the decoder into the feature's own layer) and TopK (needs every encoder row)."""
    from tests.factories.models import tiny_model
    from tracewire.dashboards import build_feature_store
    from tracewire.dashboards.logits import readout_matrix
    from tracewire.transcoders.synthetic import random_clt, random_plt

    loaded = tiny_model("llama", n_layers=2, d_model=16)
    make = random_clt if kind == "clt" else random_plt
    transcoders = make(2, 16, 24, activation=activation, seed=4)
    selection = FeatureSelection.parse("0:2-5,1:7")
    build_feature_store(loaded, transcoders, corpus, tmp_path / "s.sqlite", tokens=300, selection=selection,
                        config=CONFIG, batch_windows=4, progress=False)  # fmt: skip
    seq = CONFIG.seq_len
    ids = corpus.batch(range(-(-300 // (seq - 1))), seq)
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        loaded.adapter.layer(loaded.model, layer).mlp.register_forward_pre_hook(
            lambda _m, args, layer=layer: inputs.__setitem__(layer, args[0])
        )
        for layer in range(2)
    ]
    loaded.model(ids)
    for handle in handles:
        handle.remove()
    readout = readout_matrix(loaded)
    with FeatureStore(tmp_path / "s.sqlite", readonly=True) as store:
        assert store.features() == [(0, 2), (0, 3), (0, 4), (0, 5), (1, 7)]
        for layer, feature in store.features():
            card = store.card(layer, feature)
            assert card is not None
            acts = transcoders.encode(layer, inputs[layer])[:, 1:, feature]  # all features, then one
            assert card.activation_count == int((acts > 0).sum())
            if card.activation_count:
                assert card.act_max == pytest.approx(float(acts.max()))
            logits = transcoders.decoder_vectors(layer, torch.tensor([feature]))[0, 0] @ readout
            expected = [corpus.text_of([int(t)]) for t in logits.topk(CONFIG.n_logits).indices]
            assert [token for token, _ in card.top_logits] == expected
