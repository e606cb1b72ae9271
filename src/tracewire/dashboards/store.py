"""``FeatureStore``: the SQLite file of feature dashboards, read by the UI server and the CLI.

The schema is in :mod:`tracewire.dashboards.schema` (and ``docs/feature-store.md``). A store
opened for writing switches the file to WAL mode, so any number of readers (``readonly=True``,
other processes) keep answering ``card()`` while a build adds features: a reader sees each
feature either complete or not at all, because a feature's row and its examples are written in
one transaction and a card is read inside one read transaction.

Reading a card is three primary-key range reads on clustered (``WITHOUT ROWID``) tables plus a
lookup of the token strings it uses; it takes well under a millisecond on a warm file
(``benchmarks/dashboards.py`` measures it). Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from tracewire.dashboards.card import Example, ExampleGroup, FeatureCard
from tracewire.dashboards.schema import FORMAT, SCHEMA_VERSION, TABLES
from tracewire.errors import TracewireError
from tracewire.limits import require_regular_file

log = logging.getLogger(__name__)

_MAX_SQL_PARAMS = 900  # below SQLite's historical limit of 999 bound parameters
QUERY_TIME_LIMIT_S = 10.0
"""Longest one read may run before it is stopped (a card takes well under a millisecond)."""
TABLE_NAMES = ("meta", "vocab", "features", "examples", "labels")


class FeatureStoreError(TracewireError):
    """A feature store file is missing, malformed, of another version, or used the wrong way."""


@dataclass
class ExampleRows:
    """One feature's rows of ``examples``, column by column, as the build writes them."""

    grp: np.ndarray  # int [m]
    rank: np.ndarray  # int [m]
    position: np.ndarray  # int [m]
    center: np.ndarray  # int [m]
    activation: np.ndarray  # float [m]
    token_ids: np.ndarray  # int32 [m, W]
    acts: np.ndarray  # float32 [m, W]

    def __len__(self) -> int:
        return int(self.grp.shape[0])


@dataclass
class FeatureRecord:
    """One row of ``features`` plus its examples, as the build writes it."""

    layer: int
    feature: int
    activation_count: int
    n_tokens: int
    act_min: float
    act_max: float
    act_sum: float
    histogram: np.ndarray  # int64 [n_bins]
    quantile_values: np.ndarray  # float32 [100] (empty for a feature that never fired)
    groups: list[dict[str, Any]]  # [{"name", "lower", "upper"}], group 0 = top activations
    top_logit_ids: np.ndarray
    top_logit_values: np.ndarray
    bottom_logit_ids: np.ndarray
    bottom_logit_values: np.ndarray
    auto_label: str
    examples: ExampleRows


P = ParamSpec("P")
R = TypeVar("R")
_DAMAGE = (sqlite3.DatabaseError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
"""What decoding a damaged or crafted row raises (bad blobs, JSON, group or token references)."""


def _guarded_read(
    method: Callable[Concatenate[FeatureStore, P], R],
) -> Callable[Concatenate[FeatureStore, P], R]:
    """Run a read under the query time limit; a damaged row becomes a FeatureStoreError naming the file."""

    @functools.wraps(method)
    def wrapper(self: FeatureStore, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with self._time_limited():
                return method(self, *args, **kwargs)
        except FeatureStoreError:
            raise
        except _DAMAGE as exc:
            raise FeatureStoreError(
                f"{self.path}: damaged feature store: {method.__name__.strip('_')} failed "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper


def _blob(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _array(blob: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(blob, dtype=dtype)


class FeatureStore:
    """Open (or, unless ``readonly``, create) the feature store at ``path``.

    ``readonly=True`` opens the file read-only (``mode=ro``): it must exist, and ``set_label`` and
    the build methods raise :class:`FeatureStoreError`. The schema version is checked on open; a
    file written by a newer tracewire is refused with a message saying so. A store may be shared
    between threads (calls are serialised by a lock).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        timeout: float = 60.0,
        query_time_limit: float = QUERY_TIME_LIMIT_S,
    ) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self.query_time_limit = query_time_limit
        self._deadline = math.inf
        self._lock = threading.RLock()
        self._token_text: dict[int, str] = {}
        self._meta: dict[str, Any] | None = None
        if readonly and not self.path.exists():
            raise FeatureStoreError(
                f"{self.path}: no feature store there (build one with 'tracewire dashboards')"
            )
        if self.path.exists():  # a FIFO or device would block SQLite's open
            require_regular_file(self.path, what="feature store", error=FeatureStoreError)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = self.path.resolve().as_uri() + ("?mode=ro" if readonly else "")
        try:
            self._db = sqlite3.connect(
                target, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"{self.path}: cannot open as SQLite ({exc})") from exc
        # A crafted file (a recursive view, a huge join) must not hang a reader: every read runs
        # under a time limit, checked by SQLite's progress handler every few thousand steps.
        self._db.set_progress_handler(self._over_time, 2000)
        try:
            with self._time_limited():
                self._open()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            self._db.close()
            raise FeatureStoreError(f"{self.path}: not a readable SQLite feature store ({exc})") from exc
        except BaseException:
            self._db.close()
            raise

    # ----------------------------------------------------------------- opening

    def _over_time(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    @contextmanager
    def _time_limited(self) -> Iterator[None]:
        """Abort (``sqlite3.OperationalError: interrupted``) SQL that runs past ``query_time_limit``."""
        with self._lock:
            outer = self._deadline
            if outer == math.inf:
                self._deadline = time.monotonic() + self.query_time_limit
            try:
                yield
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise FeatureStoreError(
                        f"{self.path}: a query ran longer than {self.query_time_limit:g} s and was stopped "
                        "(a damaged or crafted store?)"
                    ) from exc
                raise
            finally:
                self._deadline = outer

    def _open(self) -> None:
        kinds = dict(self._db.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"))
        if not kinds:
            if self.readonly:
                raise FeatureStoreError(f"{self.path}: an empty database, not a feature store")
            self._create()
            return
        if kinds.get("meta") != "table":
            raise FeatureStoreError(
                f"{self.path}: not a tracewire feature store (no 'meta' table; tables: {sorted(kinds)})"
            )
        not_tables = sorted(name for name in TABLE_NAMES if kinds.get(name, "table") != "table")
        if not_tables:
            raise FeatureStoreError(f"{self.path}: {', '.join(not_tables)} must be tables, not views")
        meta = self._read_meta()
        if meta.get("format") != FORMAT:
            raise FeatureStoreError(
                f"{self.path}: meta 'format' is {meta.get('format')!r}, expected {FORMAT!r}"
            )
        missing = sorted(name for name in TABLE_NAMES if name not in kinds)
        if missing:
            raise FeatureStoreError(
                f"{self.path}: not a complete feature store (no table {', '.join(missing)})"
            )
        version = meta.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise FeatureStoreError(
                f"{self.path}: meta 'schema_version' is {version!r}, expected an integer >= 1"
            )
        if version > SCHEMA_VERSION:
            raise FeatureStoreError(
                f"{self.path}: schema version {version} was written by a newer tracewire; this tracewire "
                f"reads feature stores up to schema version {SCHEMA_VERSION}. Upgrade tracewire to open it."
            )
        if not self.readonly:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _create(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in TABLES:
                self._db.execute(statement)
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("format", json.dumps(FORMAT)), ("schema_version", json.dumps(SCHEMA_VERSION))],
            )
        log.info("created feature store %s (schema version %d)", self.path, SCHEMA_VERSION)

    @_guarded_read
    def _read_meta(self) -> dict[str, Any]:
        meta = {}
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            try:
                meta[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise FeatureStoreError(f"{self.path}: meta {key!r} is not valid JSON ({exc})") from exc
        return meta

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[None]:
        """One transaction (``IMMEDIATE`` for writes, ``DEFERRED`` for consistent multi-query reads)."""
        with self._lock:
            self._db.execute(f"BEGIN {mode}")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _require_writable(self, what: str) -> None:
        if self.readonly:
            raise FeatureStoreError(
                f"{self.path}: {what} needs a writable store; it was opened with readonly=True"
            )

    # ----------------------------------------------------------------- facts

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta`` table as a dict of decoded JSON values (re-read while a build is starting)."""
        if self._meta is None or "build" not in self._meta:
            with self._lock:
                self._meta = self._read_meta()
        return self._meta

    @property
    def schema_version(self) -> int:
        return int(self.meta["schema_version"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta.get("n_tokens", 0))

    @property
    def transcoder_id(self) -> str:
        build = self.meta.get("build") or {}
        return str(build.get("scan") or build.get("transcoders") or "")

    # ----------------------------------------------------------------- reading

    @_guarded_read
    def features(self) -> list[tuple[int, int]]:
        """Every (layer, feature) with a card, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT layer, feature FROM features ORDER BY layer, feature").fetchall()
        return [(int(layer), int(feature)) for layer, feature in rows]

    @_guarded_read
    def existing(self, layer: int) -> np.ndarray:
        """Feature ids of ``layer`` that already have a card (int64, sorted)."""
        with self._lock:
            rows = self._db.execute("SELECT feature FROM features WHERE layer = ? ORDER BY feature", (layer,))
            return np.asarray([r[0] for r in rows.fetchall()], dtype=np.int64)

    @_guarded_read
    def __contains__(self, key: tuple[int, int]) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM features WHERE layer = ? AND feature = ?", (int(key[0]), int(key[1]))
            ).fetchone()
        return row is not None

    @_guarded_read
    def card(self, layer: int, feature: int) -> FeatureCard | None:
        """The card of feature ``feature`` of layer ``layer``, or None if the store has none."""
        key = (int(layer), int(feature))
        with self._transaction("DEFERRED"):
            row = self._db.execute(
                "SELECT activation_count, n_tokens, act_min, act_max, act_sum, histogram, quantile_values, "
                "groups, top_logit_ids, top_logit_values, bottom_logit_ids, bottom_logit_values, auto_label "
                "FROM features WHERE layer = ? AND feature = ?",
                key,
            ).fetchone()
            if row is None:
                return None
            examples = self._db.execute(
                "SELECT grp, rank, position, center, activation, token_ids, acts FROM examples "
                "WHERE layer = ? AND feature = ? ORDER BY grp, rank",
                key,
            ).fetchall()
            label = self._db.execute(
                "SELECT text FROM labels WHERE layer = ? AND feature = ?", key
            ).fetchone()
            (
                count,
                n_tokens,
                act_min,
                act_max,
                act_sum,
                hist,
                quantiles,
                groups_json,
                top_ids,
                top_values,
                bottom_ids,
                bottom_values,
                auto_label,
            ) = row
            top_ids, bottom_ids = _array(top_ids, "<i4"), _array(bottom_ids, "<i4")
            decoded = [(r, _array(r[5], "<i4")) for r in examples]
            needed = set(top_ids.tolist()) | set(bottom_ids.tolist())
            for _, ids in decoded:
                needed.update(ids.tolist())
            text = self._token_strings(needed)
        groups_spec = json.loads(groups_json)
        grouped: list[list[Example]] = [[] for _ in groups_spec]
        seen: set[int] = set()
        for (grp, _rank, position, center, activation, _ids, acts), ids in decoded:
            example_acts = _array(acts, "<f4")
            if not (np.isfinite(example_acts).all() and math.isfinite(float(activation))):
                raise ValueError(f"feature {key}: non-finite example activations")
            example = Example(
                tokens=[text[i] for i in ids.tolist()],
                token_ids=ids.tolist(),
                acts=example_acts.tolist(),
                center=int(center),
                activation=float(activation),
                position=int(position),
                is_repeated=int(position) in seen,
            )
            seen.add(int(position))
            grouped[grp].append(example)
        numbers = [float(count), float(n_tokens), float(act_min), float(act_max), float(act_sum)]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"feature {key}: non-finite statistics {numbers}")
        for name, blob in (("quantile_values", quantiles), ("top_logit_values", top_values),
                           ("bottom_logit_values", bottom_values)):  # fmt: skip
            if not np.isfinite(_array(blob, "<f4")).all():
                raise ValueError(f"feature {key}: non-finite {name}")
        return FeatureCard(
            layer=key[0],
            feature=key[1],
            transcoder_id=self.transcoder_id,
            activation_count=int(count),
            n_tokens=int(n_tokens),
            act_min=float(act_min),
            act_max=float(act_max),
            act_sum=float(act_sum),
            histogram=_array(hist, "<i8").tolist(),
            quantile_values=_array(quantiles, "<f4").tolist(),
            top_logits=list(zip((text[i] for i in top_ids.tolist()), _array(top_values, "<f4").tolist())),
            bottom_logits=list(
                zip((text[i] for i in bottom_ids.tolist()), _array(bottom_values, "<f4").tolist())
            ),
            groups=[
                ExampleGroup(g["name"], float(g["lower"]), float(g["upper"]), examples)
                for g, examples in zip(groups_spec, grouped)
            ],
            auto_label=str(auto_label),
            user_label=label[0] if label else None,
        )

    def _token_strings(self, ids: Iterable[int]) -> dict[int, str]:
        missing = [i for i in ids if i not in self._token_text]
        for start in range(0, len(missing), _MAX_SQL_PARAMS):
            chunk = missing[start : start + _MAX_SQL_PARAMS]
            marks = ",".join("?" * len(chunk))
            for token_id, text in self._db.execute(
                f"SELECT token_id, text FROM vocab WHERE token_id IN ({marks})", chunk
            ):
                self._token_text[int(token_id)] = text
        for i in missing:  # ids outside the stored vocabulary still render
            self._token_text.setdefault(i, f"<{i}>")
        return self._token_text

    # ----------------------------------------------------------------- labels

    def set_label(self, layer: int, feature: int, text: str | None) -> None:
        """Set the user label of (layer, feature); ``None`` (or blank text) clears it."""
        self._require_writable("set_label")
        key = (int(layer), int(feature))
        with self._transaction():
            if text is None or not text.strip():
                self._db.execute("DELETE FROM labels WHERE layer = ? AND feature = ?", key)
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO labels (layer, feature, text, updated_at) VALUES (?, ?, ?, ?)",
                    (*key, text.strip(), datetime.now(UTC).isoformat(timespec="seconds")),
                )

    @_guarded_read
    def labels(self) -> dict[tuple[int, int], str]:
        """Effective label per feature (user label, else the automatic one), in the mapping form
        ``to_neuronpedia_json(feature_labels=...)`` takes. Features without any label are left out."""
        with self._lock:
            rows = self._db.execute(
                "SELECT f.layer, f.feature, COALESCE(l.text, f.auto_label) FROM features f "
                "LEFT JOIN labels l ON l.layer = f.layer AND l.feature = f.feature "
                "UNION ALL SELECT l.layer, l.feature, l.text FROM labels l "
                "WHERE NOT EXISTS "
                "(SELECT 1 FROM features f WHERE f.layer = l.layer AND f.feature = l.feature)"
            ).fetchall()
        return {(int(layer), int(feature)): text for layer, feature, text in rows if text}

    # ----------------------------------------------------------------- writing (the build)

    def write_meta(self, values: dict[str, Any]) -> None:
        self._require_writable("write_meta")
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )
        self._meta = None

    def check_build(self, build: dict[str, Any]) -> None:
        """Record ``build`` in a new store, or check that it matches the one already recorded.

        Cards from different models, transcoders, corpus samples or settings must not be mixed in
        one store: their numbers would not be comparable.
        """
        recorded = self.meta.get("build")
        if recorded is None:
            self.write_meta({"build": build})
            return
        differ = sorted(k for k in set(recorded) | set(build) if recorded.get(k) != build.get(k))
        if differ:
            details = "; ".join(
                f"{k}: store has {recorded.get(k)!r}, this build {build.get(k)!r}" for k in differ
            )
            raise FeatureStoreError(
                f"{self.path} holds cards of another build ({details}); write to a new file instead"
            )

    @_guarded_read
    def has_vocab(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM vocab LIMIT 1").fetchone() is not None

    def write_vocab(self, strings: Sequence[str]) -> None:
        self._require_writable("write_vocab")
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO vocab (token_id, text) VALUES (?, ?)", list(enumerate(strings))
            )
        self._token_text.clear()

    def put_features(self, records: Iterable[FeatureRecord]) -> int:
        """Write (or replace) features and their examples in one transaction; returns how many."""
        self._require_writable("put_features")
        n = 0
        with self._transaction():
            for r in records:
                key = (int(r.layer), int(r.feature))
                self._db.execute(
                    "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *key,
                        int(r.activation_count),
                        int(r.n_tokens),
                        float(r.act_min),
                        float(r.act_max),
                        float(r.act_sum),
                        _blob(r.histogram, "<i8"),
                        _blob(r.quantile_values, "<f4"),
                        json.dumps(r.groups),
                        _blob(r.top_logit_ids, "<i4"),
                        _blob(r.top_logit_values, "<f4"),
                        _blob(r.bottom_logit_ids, "<i4"),
                        _blob(r.bottom_logit_values, "<f4"),
                        r.auto_label,
                    ),
                )
                self._db.execute("DELETE FROM examples WHERE layer = ? AND feature = ?", key)
                e = r.examples
                token_ids = np.ascontiguousarray(e.token_ids, dtype="<i4")
                acts = np.ascontiguousarray(e.acts, dtype="<f4")
                self._db.executemany(
                    "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            *key,
                            grp,
                            rank,
                            position,
                            center,
                            activation,
                            token_ids[i].tobytes(),
                            acts[i].tobytes(),
                        )
                        for i, (grp, rank, position, center, activation) in enumerate(
                            zip(
                                e.grp.tolist(),
                                e.rank.tolist(),
                                e.position.tolist(),
                                e.center.tolist(),
                                e.activation.tolist(),
                            )
                        )
                    ],
                )
                n += 1
        return n

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        return f"FeatureStore({str(self.path)!r}, {mode})"
