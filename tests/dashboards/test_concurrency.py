"""A reader process queries cards while a writer process adds features (WAL), without errors.

The writer adds synthetic features one transaction at a time; feature ``i`` carries ``i`` in every
field, so a reader that saw half a feature (a row without its examples, or examples of another
write) would notice. The processes synchronise on events so that the reader provably reads while
the writer is in the middle of its work, including while the writer holds an open write
transaction. This module imports neither torch nor the model (the processes start fast).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import sqlite3
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from tracewire.dashboards import FeatureStore
from tracewire.dashboards.store import ExampleRows, FeatureRecord

N_FEATURES = 120
N_EXAMPLES = 4
WIDTH = 6


def record(i: int) -> FeatureRecord:
    examples = ExampleRows(
        grp=np.zeros(N_EXAMPLES, dtype=np.int64),
        rank=np.arange(N_EXAMPLES),
        position=np.full(N_EXAMPLES, i),
        center=np.full(N_EXAMPLES, 2),
        activation=np.full(N_EXAMPLES, float(i)),
        token_ids=np.full((N_EXAMPLES, WIDTH), i % 10, dtype=np.int32),
        acts=np.full((N_EXAMPLES, WIDTH), float(i), dtype=np.float32),
    )
    return FeatureRecord(
        layer=0, feature=i, activation_count=i, n_tokens=1000, act_min=float(i), act_max=float(i),
        act_sum=float(i * i), histogram=np.full(4, i), quantile_values=np.full(100, i, dtype=np.float32),
        groups=[{"name": "Top activations", "lower": float(i), "upper": float(i)}],
        top_logit_ids=np.arange(3), top_logit_values=np.full(3, float(i)), bottom_logit_ids=np.arange(3),
        bottom_logit_values=np.full(3, -float(i)), auto_label=f"feature {i}", examples=examples,
    )  # fmt: skip


Event = Any  # multiprocessing events (their class lives in a private module)


def writer(path: str, half: Event, read_half: Event, in_txn: Event, read_in_txn: Event, errors: Any) -> None:
    try:
        store = FeatureStore(path)
        store.check_build({"test": True})
        store.write_vocab([f"t{i}" for i in range(10)])
        for i in range(N_FEATURES):
            store.put_features([record(i)])
            if i == N_FEATURES // 2 - 1:
                half.set()
                if not read_half.wait(60):
                    raise TimeoutError("the reader never read the first half")
        store.close()
        # Hold a write transaction open (half-rewritten features) while the reader reads.
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM examples WHERE feature < 10")
        db.execute("UPDATE features SET act_max = -1 WHERE feature < 10")
        in_txn.set()
        if not read_in_txn.wait(60):
            raise TimeoutError("the reader never read during the open transaction")
        db.execute("ROLLBACK")
        db.close()
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def check(card, i: int) -> None:
    assert card.act_max == i and card.activation_count == i and card.label == f"feature {i}"
    assert len(card.top_examples) == N_EXAMPLES
    assert all(e.acts == [float(i)] * WIDTH and e.tokens == [f"t{i % 10}"] * WIDTH for e in card.top_examples)


def reader(path: str, half: Event, read_half: Event, in_txn: Event, read_in_txn: Event, results: Any) -> None:
    try:
        if not half.wait(60):
            raise TimeoutError("the writer never wrote the first half")
        store = FeatureStore(path, readonly=True)
        for i in range(N_FEATURES // 2):  # the first half is complete and readable mid-build
            check(store.card(0, i), i)
        read_half.set()
        rng = random.Random(0)
        reads = present = 0
        while not in_txn.is_set():  # random reads while the writer adds the second half
            i = rng.randrange(N_FEATURES)
            card = store.card(0, i)
            reads += 1
            if card is not None:
                check(card, i)
                present += 1
        for i in range(N_FEATURES):  # an open write transaction: the reader sees the committed state
            check(store.card(0, i), i)
        read_in_txn.set()
        store.close()
        results.put(("ok", reads, present))
    except BaseException:
        results.put(("error", traceback.format_exc(), 0))
        raise


def test_reader_queries_cards_while_a_writer_adds_features(tmp_path: Path):
    context = mp.get_context("spawn")
    path = str(tmp_path / "concurrent.sqlite")
    events = [context.Event() for _ in range(4)]
    results = context.Queue()
    errors = context.Queue()
    processes = [
        context.Process(target=writer, args=(path, *events, errors)),
        context.Process(target=reader, args=(path, *events, results)),
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 120
    for process in processes:
        process.join(max(1.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
    writer_errors = []
    while True:
        try:
            writer_errors.append(errors.get_nowait())
        except queue.Empty:
            break
    assert not writer_errors, writer_errors[0]
    status, reads, present = results.get(timeout=5)
    assert status == "ok", reads
    assert [p.exitcode for p in processes] == [0, 0]
    assert present <= reads  # how many random reads fell during the second half depends on timing
