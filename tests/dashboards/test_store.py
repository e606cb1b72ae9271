"""The feature store: schema versioning, clear errors, labels, export and terminal rendering."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.dashboards.token_features import N_LAYERS
from tests.factories.models import VOCAB
from tracewire.dashboards import FeatureStore, FeatureStoreError, export_feature_json, render_card
from tracewire.dashboards.card import cantor_pair
from tracewire.dashboards.labels import auto_label
from tracewire.dashboards.schema import SCHEMA_VERSION


@pytest.fixture
def store_copy(built_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "features.sqlite"
    shutil.copy(built_store, path)
    return path


def test_schema_version_is_stored_and_a_newer_one_is_refused(store_copy: Path):
    with FeatureStore(store_copy, readonly=True) as store:
        assert store.schema_version == SCHEMA_VERSION == 1
        assert store.meta["format"] == "tracewire-feature-store"
    db = sqlite3.connect(store_copy)
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    for readonly in (True, False):
        with pytest.raises(
            FeatureStoreError, match=r"schema version 99 .*newer tracewire.*up to schema version 1"
        ):
            FeatureStore(store_copy, readonly=readonly)


def test_files_that_are_not_stores_give_clear_errors(tmp_path: Path):
    with pytest.raises(FeatureStoreError, match="no feature store there"):
        FeatureStore(tmp_path / "missing.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(FeatureStoreError, match=r"junk\.sqlite"):
        FeatureStore(junk, readonly=True)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(FeatureStoreError, match=r"not a tracewire feature store.*'t'"):
        FeatureStore(other)


def test_store_uses_wal_and_an_index_on_layer_feature(built_store: Path):
    db = sqlite3.connect(built_store)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for table in ("features", "examples", "labels"):
        keys = sorted((pk, name) for _, name, _, _, _, pk in db.execute(f"PRAGMA table_info({table})") if pk)
        assert [name for _, name in keys][:2] == ["layer", "feature"]
        plan = " ".join(
            str(row[-1])
            for row in db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE layer = 1 AND feature = 2")
        )
        assert "USING PRIMARY KEY (layer=? AND feature=?)" in plan, plan
    db.close()


def test_user_labels_override_auto_labels_and_flow_into_graph_json(store_copy: Path):
    from tests.graph.factory import random_graph
    from tracewire.graph import to_neuronpedia_json

    with FeatureStore(store_copy) as store:
        auto = store.card(0, 5).auto_label  # type: ignore[union-attr]
        assert auto and store.labels()[(0, 5)] == auto
        store.set_label(0, 5, "  my label  ")
        card = store.card(0, 5)
        assert card is not None and card.label == "my label" and card.user_label == "my label"
        assert card.auto_label == auto and card.to_json()["label"] == "my label"
        store.set_label(7, 3, "a feature without a card")  # labels may name features not built
        labels = store.labels()
        assert labels[(0, 5)] == "my label" and labels[(7, 3)] == "a feature without a card"
        assert len(labels) == N_LAYERS * VOCAB + 1
        graph = random_graph(n_layers=N_LAYERS, n_pos=4, n_features=10, seed=1, vocab_size=VOCAB)
        document = to_neuronpedia_json(graph, "g", feature_labels=labels)
        nodes = [n for n in document["nodes"] if n["feature_type"] == "cross layer transcoder"]
        assert nodes
        for node in nodes:
            layer, feature = int(node["layer"]), int(node["node_id"].split("_")[1])
            assert node["clerp"] == labels[(layer, feature)]
            assert node["feature"] == cantor_pair(layer, feature)  # = the card's index
        store.set_label(0, 5, None)
        assert store.card(0, 5).label == auto  # type: ignore[union-attr]
    with FeatureStore(store_copy, readonly=True) as store, pytest.raises(FeatureStoreError, match="readonly"):
        store.set_label(0, 5, "x")


def test_cantor_index_matches_the_graph_json(built_store: Path):
    from tracewire.graph.neuronpedia_ids import cantor_pair as graph_cantor

    assert all(cantor_pair(a, b) == graph_cantor(a, b) for a in range(40) for b in range(0, 5000, 37))


def test_export_writes_one_index_json_per_feature(built_store: Path, tmp_path: Path):
    with FeatureStore(built_store, readonly=True) as store:
        written, missing = export_feature_json(store, tmp_path / "features", [(0, 3), (1, 4), (1, 500)])
        assert missing == [(1, 500)]
        assert sorted(p.name for p in written) == sorted(f"{cantor_pair(*k)}.json" for k in [(0, 3), (1, 4)])
        data = json.loads((tmp_path / "features" / f"{cantor_pair(1, 4)}.json").read_text())
        assert data == store.card(1, 4).to_json()  # type: ignore[union-attr]


def test_terminal_card_highlights_the_activating_tokens(built_store: Path):
    with FeatureStore(built_store, readonly=True) as store:
        card = store.card(0, 30)
    assert card is not None and card.top_examples
    plain = render_card(card, color=False)
    token = card.top_examples[0].tokens[card.top_examples[0].center]
    assert f"[[{token}]]" in plain and "layer 0 feature 30" in plain and card.auto_label in plain
    assert "\x1b[" not in plain
    colored = render_card(card, color=True)
    assert "\x1b[48;5;" in colored and f"\x1b[1m{token}" in colored


def test_auto_label_rules():
    one = auto_label([" Paris"] * 4 + [" London"], [5, 5, 5, 5, 1], [" France", " French", "France"],
                     activation_count=5, n_tokens=100)  # fmt: skip
    assert one == '"Paris" → "France"/"French"'
    two = auto_label(["a", "b", "a", "b", "c"], [1, 1, 1, 1, 1], ["x"], activation_count=5, n_tokens=9)
    assert two == '"a"/"b" → "x"'
    mixed = auto_label([str(i) for i in range(10)], [1] * 10, ["\n"], activation_count=10, n_tokens=99)
    assert mixed == '(varied) → "⏎"'
    assert auto_label([], [], [], activation_count=0, n_tokens=1234) == "(never fired in 1,234 tokens)"
    assert len(auto_label(["x" * 100], [1], ["y" * 100], activation_count=1, n_tokens=1)) == 60
