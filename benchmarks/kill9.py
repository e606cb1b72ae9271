"""kill -9 at random points of five writers: the previous good output survives, nothing half-written loads.

Run: ``python benchmarks/kill9.py [--kills 10] [--ops corpus,train,dashboards,graph-save,prune-json]``.
Prints a table and writes ``benchmarks/results/kill9.json``.

For each operation a first, uninterrupted run writes a good output; then ``--kills`` runs of the
same operation (writing over that output) are SIGKILLed at a uniformly random moment of the
operation's measured duration. After every kill, the output location is checked the way a user
would use it next:

- ``corpus``: ``build_corpus`` over the previous corpus -> ``TokenCorpus`` opens, every window
  reads, and it is the previous corpus or the complete new one (same token count either way);
- ``train``: a training run (from scratch each time) with checkpoints every 2 steps ->
  ``load_checkpoint`` validates (or there is none yet), no ``config.yaml`` unless the whole set
  loads, and the last killed run, resumed, gives the uninterrupted run's parameters bit for bit;
- ``dashboards``: a feature-store build (from scratch each time) -> the store opens read-only and
  every card in it equals the uninterrupted build's card of that feature;
- ``graph-save``: ``Graph.save`` alternating two graphs onto one path -> the file loads and equals
  one of them;
- ``prune-json``: ``tracewire prune --json`` writing over the previous export -> every JSON file
  of the folder parses and imports, and ``graph-metadata.json`` lists only files that exist.

The child process is this script with ``--child OP DIR`` (tiny factory models and corpora, so
each operation takes seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "kill9.json"
OPS = ("corpus", "train", "dashboards", "graph-save", "prune-json")
READY = "READY"


# ----------------------------------------------------------------------------- the children


def _child(op: str, out: Path, variant: int) -> None:
    """Run ``op`` writing into ``out``; prints READY once imports and set-up are done."""
    import torch

    torch.set_num_threads(1)
    if op == "corpus":
        from tests.corpus.fixtures import write_text_dir
        from tests.factories.models import tiny_tokenizer

        from tracewire.corpus import build_corpus, local_source

        texts = write_text_dir(out.parent / "texts", n_files=60, words=200)
        tokenizer = tiny_tokenizer()
        print(READY, flush=True)
        build_corpus(
            out,
            tokenizer=tokenizer,
            bos_token_id=0,
            model_name="tiny",
            sources=[local_source(texts)],
            raw_dir=out.parent / "raw",
            fetch=False,
            seed=variant,
            shard_tokens=2000,
        )
    elif op == "train":
        from tests.training.helpers import tiny_config, tiny_corpus, tiny_source

        from tracewire.training import train_transcoders

        corpus = tiny_corpus(out.parent / "train-corpus")
        config = tiny_config(kind="plt", activation="jumprelu", tokens=8 * 15 * 12, checkpoint_every=2)
        source = tiny_source(corpus, config)
        print(READY, flush=True)
        train_transcoders(config, source, out, resume=True, progress=False)
    elif op == "dashboards":
        from tests.corpus.fixtures import build_fixture_corpus
        from tests.dashboards.conftest import BATCH_WINDOWS, CONFIG, TOKENS
        from tests.dashboards.token_features import token_model, token_transcoders

        from tracewire.corpus import TokenCorpus
        from tracewire.dashboards import build_feature_store

        directory = out.parent / "dash-corpus"
        corpus = (
            TokenCorpus(directory / "corpus")
            if (directory / "corpus").exists()
            else build_fixture_corpus(directory)
        )
        loaded = token_model()
        transcoders = token_transcoders(loaded)
        print(READY, flush=True)
        build_feature_store(
            loaded,
            transcoders,
            corpus,
            out,
            tokens=TOKENS,
            config=CONFIG,
            batch_windows=BATCH_WINDOWS,
            progress=False,
            checkpoint_every=1,
        )
    elif op == "graph-save":
        from tests.graph.factory import random_graph

        graphs = [
            random_graph(n_layers=6, n_pos=24, n_features=3000, seed=s, edge_density=0.5) for s in (0, 1)
        ]
        print(READY, flush=True)
        for i in range(6):
            graphs[i % 2].save(out)
    elif op == "prune-json":
        from tracewire.cli.main import app

        graph = out.parent / "graph.safetensors"
        if not graph.exists():
            from tests.graph.factory import random_graph

            random_graph(n_layers=6, n_pos=24, n_features=3000, seed=2, edge_density=0.5).save(graph)
        print(READY, flush=True)
        app(
            [
                "prune",
                str(graph),
                "--json",
                str(out),
                "--slug",
                "g",
                "--node-threshold",
                str(0.5 + variant % 5 / 10),
            ],
            standalone_mode=True,
        )


# ----------------------------------------------------------------------------- the checks


def _check_corpus(out: Path, good: dict[str, Any]) -> str | None:
    from tracewire.corpus import TokenCorpus

    corpus = TokenCorpus(out)
    corpus.batch(range(corpus.n_windows(16)), 16)
    if corpus.n_tokens != good["n_tokens"]:
        return f"{corpus.n_tokens} tokens, the good corpus has {good['n_tokens']}"
    return None


def _check_train(out: Path, good: dict[str, Any]) -> str | None:
    from tracewire.training.checkpoint import load_checkpoint
    from tracewire.transcoders import load_transcoders

    load_checkpoint(out / "checkpoints")
    if (out / "config.yaml").exists():
        load_transcoders(out)
    return None


def _check_store(out: Path, good: dict[str, Any]) -> str | None:
    """Every card of the (partial) store equals the uninterrupted build's card of that feature."""
    import dataclasses

    from tracewire.dashboards.store import FeatureStore

    if not out.exists():
        return None
    with FeatureStore(good["store"], readonly=True) as reference, FeatureStore(out, readonly=True) as store:
        for layer, feature in store.features():
            card, expected = store.card(layer, feature), reference.card(layer, feature)
            if card is None or expected is None or dataclasses.asdict(card) != dataclasses.asdict(expected):
                return f"feature ({layer}, {feature}) differs from the uninterrupted build's card"
    return None


def _check_graph(out: Path, good: dict[str, Any]) -> str | None:
    from tests.graph.factory import random_graph

    from tracewire.graph import Graph

    graph = Graph.load(out)
    options = [random_graph(n_layers=6, n_pos=24, n_features=3000, seed=s, edge_density=0.5) for s in (0, 1)]
    return None if any(graph.equals(option) for option in options) else "the file is neither graph"


def _check_prune(out: Path, good: dict[str, Any]) -> str | None:
    from tracewire.graph.neuronpedia import from_neuronpedia_json

    listing = json.loads((out / "graph-metadata.json").read_text())
    for entry in listing.get("graphs", []):
        name = entry.get("slug", "") + ".json"
        if not (out / name).exists() and not (out / (name + ".gz")).exists():
            return f"graph-metadata.json lists {name}, which does not exist"
    for path in out.glob("*.json"):
        if path.name != "graph-metadata.json":
            from_neuronpedia_json(path)
    return None


CHECKS: dict[str, Callable[[Path, dict[str, Any]], str | None]] = {
    "corpus": _check_corpus,
    "train": _check_train,
    "dashboards": _check_store,
    "graph-save": _check_graph,
    "prune-json": _check_prune,
}
OUTPUT_NAME = {
    "corpus": "corpus",
    "train": "tc",
    "dashboards": "features.sqlite",
    "graph-save": "g.safetensors",
    "prune-json": "export",
}


# ----------------------------------------------------------------------------- the driver


def _start(op: str, out: Path, variant: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", op, str(out), str(variant)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != READY:
        process.kill()
        raise RuntimeError(f"{op} child failed before starting (exit {process.wait()})")
    return process


def _run_to_end(op: str, out: Path, variant: int) -> float:
    start = time.perf_counter()
    process = _start(op, out, variant)
    started = time.perf_counter()
    code = process.wait(timeout=900)
    if code != 0:
        raise RuntimeError(
            f"{op}: the uninterrupted run failed (exit {code}), started after {started - start:.1f} s"
        )
    return time.perf_counter() - started


FRESH_EACH_KILL = ("train", "dashboards")
"""Writers whose killed runs start from nothing (else a run resuming the last kill may finish first)."""


def _remove(out: Path) -> None:
    import shutil

    if out.is_dir():
        shutil.rmtree(out)
    for path in (out, Path(f"{out}-wal"), Path(f"{out}-shm")):
        if path.is_file():
            path.unlink()


def run_op(op: str, kills: int, work: Path, rng: random.Random) -> dict[str, Any]:
    """One uninterrupted run, then ``kills`` killed runs over it, each followed by the check."""
    out = work / op / OUTPUT_NAME[op]
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = _run_to_end(op, out, 0)
    good: dict[str, Any] = {}
    if op == "corpus":
        from tracewire.corpus import TokenCorpus

        good["n_tokens"] = TokenCorpus(out).n_tokens
    if op == "dashboards":  # the killed builds start afresh; the good one is kept to compare cards with
        good["store"] = out.with_name("good.sqlite")
        out.rename(good["store"])
    outcomes: list[dict[str, Any]] = []
    for kill in range(kills):
        if op in FRESH_EACH_KILL:
            _remove(out)
        process = _start(op, out, kill + 1)
        delay = rng.uniform(0.0, duration)
        time.sleep(delay)
        finished = process.poll() is not None
        if not finished:
            process.send_signal(signal.SIGKILL)
        process.wait()
        try:
            problem = CHECKS[op](out, good)
        except Exception as exc:  # a check that cannot load the output: the failure this measures
            problem = f"{type(exc).__name__}: {exc}"
        outcomes.append({"delay_s": round(delay, 3), "finished_before_kill": finished, "problem": problem})
    result = {
        "op": op,
        "uninterrupted_s": round(duration, 2),
        "kills": outcomes,
        "failures": sum(1 for o in outcomes if o["problem"]),
    }
    if op == "train":
        result["resume_identical"] = _train_resumes_identically(out, work)
        result["failures"] += 0 if result["resume_identical"] else 1
    return result


def _train_resumes_identically(killed: Path, work: Path) -> bool:
    """Finish the killed run (resume) and compare with an uninterrupted one, bit for bit."""
    from safetensors.torch import load_file

    straight = work / "train" / "straight"
    _run_to_end("train", straight, 0)
    _run_to_end("train", killed, 0)
    a, b = (
        load_file(str(next(straight.glob("layer_0.safetensors")))),
        load_file(str(killed / "layer_0.safetensors")),
    )
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-results", action="store_true", help="do not write benchmarks/results/kill9.json"
    )
    args = parser.parse_args()
    if args.child:
        op, out, variant = args.child
        _child(op, Path(out), int(variant))
        return 0
    import tempfile

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="tracewire-kill9-") as tmp:
        work = args.work or Path(tmp)
        results = [run_op(op, args.kills, work, rng) for op in args.ops.split(",")]
    print(f"{'operation':12s} {'kills':>6s} {'done first':>10s} {'failures':>9s} {'run s':>7s}")
    for r in results:
        done = sum(1 for k in r["kills"] if k["finished_before_kill"])
        print(f"{r['op']:12s} {len(r['kills']):6d} {done:10d} {r['failures']:9d} {r['uninterrupted_s']:7.1f}")
        for k in r["kills"]:
            if k["problem"]:
                print(f"    after {k['delay_s']} s: {k['problem']}")
    if not args.no_results:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"seed": args.seed, "load_average": os.getloadavg(), "results": results}, indent=1)
        )
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
