"""Benchmark: attribution, a training step and a dashboard build with and without a busy neighbour.

The issue: a 6-token all-feature graph took 4.3 s quiet and 17.1 s with one ``yes`` beside it —
thread oversubscription, not the work. This starts and stops the neighbour itself (``yes >
/dev/null`` or a torch matmul loop, pinned with ``sched_setaffinity`` to one CPU of ours) and times
each workload in four conditions, all in one run so the ratios compare like with like:

- quiet / busy  × policy off (``TRACEWIRE_THREADS=off``, torch's threads = every CPU we may use)
  / policy on (``tracewire.threads``: fewer threads when the calibration sees a busy CPU).

Workloads (what users run, small enough for a few minutes on 2 cores):

- attribution: "The capital of France is" on SmolLM2-135M with 1,024-feature calibrated random
  PLTs (~100 active per token and layer: ~15k features), the ``--attr-budget`` most influential
  features (``attribute``; every feature takes minutes on a loaded 2-core box);
- training step: ``TrainableTranscoders`` forward + losses + backward + Adam on activations of
  the model's shape, under ``thread_policy("training")`` (measured to decide whether training should
  use the policy: at load 5–6 it made the busy step 24% slower, so ``train_transcoders`` does not);
- dashboards: ``build_feature_store`` over ``--dash-tokens`` tokens for 4 layers × 1,024 features
  (likewise measured; ``build_feature_store`` does not apply the policy).

Each time is the best of ``--repeats``. Goal (issue 20, Must show 3): busy ≤ 2× quiet with the
policy. Absolute numbers need a quiet box; the busy/quiet ratios are what this measures.

    python benchmarks/busy_neighbour.py [--neighbour yes|matmul] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("benchmark")
PROMPT = "The capital of France is"


def _matmul_loop(cpu: int) -> None:  # pragma: no cover - runs in the neighbour process
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while True:
        a = torch.tanh(a @ a)


@contextmanager
def neighbour(kind: str) -> Iterator[int]:
    """A CPU-bound process pinned to the last CPU of ours, until the block ends; yields its pid."""
    cpu = max(os.sched_getaffinity(0))
    proc: Any
    if kind == "yes":
        proc = subprocess.Popen(
            ["yes"], stdout=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
        )
        pid = proc.pid
    else:
        proc = multiprocessing.get_context("spawn").Process(target=_matmul_loop, args=(cpu,), daemon=True)
        proc.start()
        pid = proc.pid
    try:
        _wait_until_running(pid)
        yield pid
    finally:
        proc.kill() if kind == "yes" else proc.terminate()
        proc.wait() if kind == "yes" else proc.join()


def _wait_until_running(pid: int, ticks: int = 5) -> None:
    """Wait until the neighbour has used ``ticks`` jiffies of CPU (it is really spinning)."""

    def used() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    start = used()
    while used() - start < ticks:
        time.sleep(0.01)


def best_of(repeats: int, work: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t)
    return best


def workloads(args: argparse.Namespace, work: Path) -> dict[str, Callable[[], Any]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dashboards_benchmark", Path(__file__).parent / "dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    dashboards_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dashboards_benchmark)
    from tracewire.attribution.engine import attribute
    from tracewire.dashboards import DashboardConfig, build_feature_store
    from tracewire.dashboards.selection import FeatureSelection
    from tracewire.models.loading import load_model
    from tracewire.threads import thread_policy
    from tracewire.training.config import fast_default_config
    from tracewire.training.losses import compute_losses
    from tracewire.training.module import TrainableTranscoders
    from tracewire.transcoders.calibrated import calibrated_random_plt

    lm = load_model("smollm2-135m")
    ts = calibrated_random_plt(lm, n_features=1024, target_active=100, activation="relu")
    corpus = dashboards_benchmark.corpus_for(lm, None, work)

    def attribution() -> None:
        attribute(PROMPT, lm, ts, max_feature_nodes=args.attr_budget, progress=False)

    config = fast_default_config()
    module = TrainableTranscoders(config, lm.n_layers, lm.d_model, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    xs = torch.randn(lm.n_layers, args.train_tokens, lm.d_model)
    ys = torch.randn(lm.n_layers, args.train_tokens, lm.d_model)

    def training_step() -> None:
        with thread_policy("training"):
            for _ in range(args.train_steps):
                recon, acts, pre = module(xs)
                loss = compute_losses(module, recon, ys, acts, pre, 1e-3).total
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    selection = FeatureSelection({layer: torch.arange(1024) for layer in range(4)})
    runs = [0]

    def dashboards() -> None:
        runs[0] += 1
        with thread_policy("dashboards"):
            build_feature_store(
                lm,
                ts,
                corpus,
                work / f"store-{runs[0]}",
                tokens=args.dash_tokens,
                selection=selection,
                config=DashboardConfig(),
                progress=False,
            )

    return {"attribution": attribution, "training step": training_step, "dashboards": dashboards}


def main() -> None:
    import tracewire.threads as threads

    parser = argparse.ArgumentParser()
    parser.add_argument("--neighbour", choices=["yes", "matmul"], default="yes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--attr-budget", type=int, default=512, help="feature budget (None: every feature, ~15k rows)"
    )
    parser.add_argument("--train-tokens", type=int, default=1024)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--dash-tokens", type=int, default=1024)
    parser.add_argument("--only", nargs="*", default=None, help="workloads to run (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # a kill must still stop the neighbour: SIGTERM unwinds through the context manager
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cpus = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="tracewire-busy-"))
    jobs = workloads(args, work)
    if args.only:
        jobs = {name: job for name, job in jobs.items() if name in args.only}
    for job in jobs.values():
        job()  # warm-up: model conversion, allocator, corpus
    results: dict[str, dict[str, float]] = {name: {} for name in jobs}
    # conditions interleaved, best of the repeats: a load that drifts during the run (a shared
    # box) then hits every condition alike instead of the last ones
    for _ in range(args.repeats):
        for policy in ("off", "auto"):
            os.environ[threads.ENV_VAR] = policy
            for busy in (False, True):
                torch.set_num_threads(cpus)
                label = f"{'busy' if busy else 'quiet'}, policy {policy}"
                with neighbour(args.neighbour) if busy else _nothing():
                    for name, job in jobs.items():
                        threads._last_calibration = None  # calibrate in this condition
                        seconds = best_of(1, job)
                        results[name][label] = min(results[name].get(label, float("inf")), seconds)
                        print(f"{name:14s} {label:22s} {seconds:8.2f} s", flush=True)
    os.environ.pop(threads.ENV_VAR, None)

    lines = [
        f"CPUs available: {cpus}; neighbour: `{args.neighbour}` pinned to one of them; best of {args.repeats}",
        "",
        "| workload | quiet (off) | busy (off) | busy/quiet (off) | quiet (policy) | busy (policy) | "
        "busy/quiet (policy) | busy: policy vs off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        qo, bo = r["quiet, policy off"], r["busy, policy off"]
        qa, ba = r["quiet, policy auto"], r["busy, policy auto"]
        lines.append(
            f"| {name} | {qo:.2f} s | {bo:.2f} s | {bo / qo:.2f}x | {qa:.2f} s | {ba:.2f} s | "
            f"{ba / qa:.2f}x | {bo / ba:.2f}x faster |"
        )
    table = "\n".join(lines)
    print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"cpus": cpus, "neighbour": args.neighbour, "results": results}, indent=1)
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
