"""The feature store's SQLite schema, version 1 (the reference; ``docs/feature-store.md`` explains it).

One ``.sqlite`` file holds the dashboards of one build (one model, one transcoder set, one corpus
sample). SQLite because the store must answer single-card lookups in milliseconds from the UI
server and the CLI while a build is still writing (WAL journal: readers never block the writer and
see only committed transactions), and because every language can read it.

Tables (all keyed by ``(layer, feature)`` first; ``WITHOUT ROWID`` so rows are clustered by that
key and a card is a handful of adjacent B-tree pages):

``meta(key TEXT PRIMARY KEY, value TEXT)``
    JSON values. ``format`` = ``"tracewire-feature-store"``; ``schema_version`` (an integer; a
    reader refuses a newer one); ``build`` = everything that defines the build (model,
    transcoders, scan, corpus, token budget, window length, example settings, seed), compared
    when another job adds features to the same store; ``n_tokens`` = tokens the statistics were
    taken over (BOS positions excluded); ``vocab_size``.
``vocab(token_id INTEGER PRIMARY KEY, text TEXT)``
    Each token decoded on its own, so cards render without the tokenizer or the model.
``features(layer, feature, ...)``  PRIMARY KEY ``(layer, feature)``
    ``activation_count`` (tokens where the feature is > 0), ``n_tokens``, ``act_min`` /
    ``act_max`` / ``act_sum`` over those tokens; ``histogram``: int64 counts of equal-width bins
    over ``[act_min, act_max]`` (they sum to ``activation_count``); ``quantile_values``: float32
    percentiles 1..100 of the firing activations; ``groups``: JSON list of the example groups
    ``[{"name", "lower", "upper"}]`` (group 0 = top activations, then activation quantiles from
    the highest); ``top_logit_ids`` / ``top_logit_values`` / ``bottom_logit_ids`` /
    ``bottom_logit_values``: int32 / float32 arrays; ``auto_label`` (see ``labels.py``).
``examples(layer, feature, grp, rank, ...)``  PRIMARY KEY ``(layer, feature, grp, rank)``
    One token window per row: ``position`` (index of the example's centre token in the corpus
    token stream), ``center`` (its index inside the window = ``train_token_ind``),
    ``activation`` (at the centre), ``token_ids`` int32 and ``acts`` float32 arrays (the
    feature's activation on every token of the window).
``labels(layer, feature, text, updated_at)``  PRIMARY KEY ``(layer, feature)``
    User labels. They live apart from ``features`` so that rebuilding or adding features never
    touches them; the effective label is the user label, else ``features.auto_label``.

Arrays are stored as BLOBs of little-endian ``int32`` / ``int64`` / ``float32`` values (numpy
``"<i4"``, ``"<i8"``, ``"<f4"``), which is compact and decodes with one ``frombuffer``.
"""

from __future__ import annotations

FORMAT = "tracewire-feature-store"
#: The schema version this tracewire writes and the newest it reads.
SCHEMA_VERSION = 1

TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS vocab (
        token_id INTEGER PRIMARY KEY,
        text TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS features (
        layer INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        activation_count INTEGER NOT NULL,
        n_tokens INTEGER NOT NULL,
        act_min REAL NOT NULL,
        act_max REAL NOT NULL,
        act_sum REAL NOT NULL,
        histogram BLOB NOT NULL,
        quantile_values BLOB NOT NULL,
        groups TEXT NOT NULL,
        top_logit_ids BLOB NOT NULL,
        top_logit_values BLOB NOT NULL,
        bottom_logit_ids BLOB NOT NULL,
        bottom_logit_values BLOB NOT NULL,
        auto_label TEXT NOT NULL,
        PRIMARY KEY (layer, feature)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS examples (
        layer INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        grp INTEGER NOT NULL,
        rank INTEGER NOT NULL,
        position INTEGER NOT NULL,
        center INTEGER NOT NULL,
        activation REAL NOT NULL,
        token_ids BLOB NOT NULL,
        acts BLOB NOT NULL,
        PRIMARY KEY (layer, feature, grp, rank)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS labels (
        layer INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        text TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (layer, feature)
    ) WITHOUT ROWID""",
)
