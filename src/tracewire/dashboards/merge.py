"""``merge_feature_stores``: shards of one dashboard build, made apart, merged into one store.

A build split over workers (``FeatureSelection.restrict`` by layers or feature ranges) writes one
store per shard. Each card depends only on its own feature and the shared corpus sample, so the
union of the shards' rows *is* the single-process store: the merge copies the ``features``,
``examples`` and ``labels`` rows verbatim (SQL ``INSERT ... SELECT`` from each attached shard; no
number is recomputed or re-encoded). It refuses shards of different builds (the ``build`` meta
record, token count or vocabulary differ) and shards that overlap (a (layer, feature) in two shards).

The merged file is written to a temporary sibling and renamed into place (``atomic.py``), so a
crashed merge leaves no half store behind.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from tracewire.atomic import atomic_write_with
from tracewire.dashboards.store import FeatureStore, FeatureStoreError

_COPIED_TABLES = ("features", "examples", "labels")


def merge_feature_stores(shards: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> int:
    """Merge ``shards`` into a new store at ``output`` (replaced if it exists); returns the card count."""
    if not shards:
        raise FeatureStoreError("merge_feature_stores needs at least one shard")
    paths = [Path(shard).expanduser() for shard in shards]
    meta, vocab = _check_shards(paths)

    def write(temp_name: str) -> None:
        with FeatureStore(temp_name) as merged:
            merged.write_meta(meta)
            merged.write_vocab(vocab)
        db = sqlite3.connect(Path(temp_name).resolve().as_uri(), uri=True, isolation_level=None)
        try:
            for path in paths:
                db.execute("ATTACH DATABASE ? AS shard", (path.resolve().as_uri() + "?mode=ro",))
                db.execute("BEGIN IMMEDIATE")
                for table in _COPIED_TABLES:
                    db.execute(f"INSERT INTO main.{table} SELECT * FROM shard.{table}")
                db.execute("COMMIT")
                db.execute("DETACH DATABASE shard")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    atomic_write_with(output, write)
    with FeatureStore(output, readonly=True) as merged_store:
        return len(merged_store.features())


def _check_shards(paths: Sequence[Path]) -> tuple[dict[str, object], list[str]]:
    """The shared meta (build, n_tokens, vocab_size) and vocabulary; FeatureStoreError if shards differ."""
    reference: dict[str, object] | None = None
    vocab: list[str] = []
    owner: dict[tuple[int, int], Path] = {}
    for path in paths:
        with FeatureStore(path, readonly=True) as store:
            meta = {key: store.meta.get(key) for key in ("build", "n_tokens", "vocab_size")}
            if meta["build"] is None:
                raise FeatureStoreError(f"{path}: no build record; not a finished dashboard shard")
            if reference is None:
                reference = meta
                vocab = _vocab(store)
            elif meta != reference:
                differ = sorted(k for k in meta if meta[k] != reference[k])
                raise FeatureStoreError(
                    f"{path} was made by another build than {paths[0]} (differs in {', '.join(differ)}); "
                    "only shards of one build merge"
                )
            for key in store.features():
                if key in owner:
                    raise FeatureStoreError(
                        f"feature {key} is in both {owner[key]} and {path}; shards must not overlap"
                    )
                owner[key] = path
    assert reference is not None
    return reference, vocab


def _vocab(store: FeatureStore) -> list[str]:
    db = sqlite3.connect(store.path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return [text for (text,) in db.execute("SELECT text FROM vocab ORDER BY token_id")]
    finally:
        db.close()
