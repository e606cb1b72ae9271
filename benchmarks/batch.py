"""Batch attribution: N prompts on SmolLM2-135M serially vs on a local Ray cluster, and a scaling plan.

Both runs attribute the same prompts with the same settings (calibrated random PLTs as in
``benchmarks/attribution.py``, fp32, one feature budget) through ``tracewire.batch.run_batch``:
serially in this process with ``--threads`` torch threads, then on ``--workers`` Ray actors with
``--threads`` threads each. Reported: wall time of each run (model loading included, Ray start-up
included for the cluster run), the ratio, per-prompt seconds, the fixed start-up cost of each
run, each worker's peak memory and graphs per hour per worker; from those, the ratio projected
for larger batches and a plan for N machines (how many workers fit one machine by cores and by
memory, and the graphs per hour of the fleet, discounted by the steady-state efficiency measured
here: serial seconds per prompt over a worker's seconds per prompt).

The numbers mean something only on a quiet machine: on a shared box the workers compete with
other jobs for the same cores. Results go to ``benchmarks/results/batch.json``.

    python benchmarks/batch.py [--prompts 64] [--workers 2] [--threads 1] [--budget 64]
        [--features 4096] [--machine-cores 16] [--machine-gib 64] [--machines 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("TRACEWIRE_BENCH_WORK", Path(tempfile.gettempdir()) / "tracewire-bench"))
SUBJECTS = [
    "France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Brazil", "Canada", "Mexico", "Egypt",
    "Kenya", "Peru", "Chile", "Norway", "Sweden",
]  # fmt: skip
TEMPLATES = [
    "The capital of {} is",
    "The official language of {} is",
    "The currency used in {} is the",
    "A famous city in {} is",
]


def prompts(n: int) -> list[str]:
    """``n`` distinct short factual prompts (templates x subjects)."""
    out = [template.format(subject) for subject in SUBJECTS for template in TEMPLATES]
    if n > len(out):
        raise SystemExit(f"--prompts {n}: at most {len(out)} distinct prompts")
    return out[:n]


def run(jobs: list[Any], settings: Any, out: Path, workers: int) -> dict[str, Any]:
    from tracewire.batch import run_batch

    shutil.rmtree(out, ignore_errors=True)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    report = run_batch(jobs, settings, out, workers=workers, progress=False, on_result=results.append)
    wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == "ok"]
    peak_by_worker: dict[int, float] = {}
    busy_by_worker: dict[int, float] = {}
    for r in ok:
        peak_by_worker[r["pid"]] = max(peak_by_worker.get(r["pid"], 0.0), r["peak_rss_mib"])
        busy_by_worker[r["pid"]] = busy_by_worker.get(r["pid"], 0.0) + r["seconds"]
    return {
        "workers": max(workers, 1),
        "wall_seconds": wall,
        "graphs": len(ok),
        "failed": len(report.failed),
        "load_seconds": [w["load_seconds"] for w in report.workers],
        "per_prompt_seconds": {
            "mean": statistics.fmean(r["seconds"] for r in ok),
            "median": statistics.median(r["seconds"] for r in ok),
            "max": max(r["seconds"] for r in ok),
        },
        "peak_rss_mib_per_worker": max(peak_by_worker.values()),
        # Start-up (cluster, model loading) and dispatch: the wall time no worker spent attributing.
        "overhead_seconds": wall - max(busy_by_worker.values()),
    }


def plan(serial: dict[str, Any], cluster: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Workers per machine and fleet throughput, from the measured per-prompt cost and memory."""
    per_prompt = cluster["per_prompt_seconds"]["mean"]
    speedup = serial["wall_seconds"] / cluster["wall_seconds"]
    # Steady state: how much slower one prompt gets when the workers share the machine (cores,
    # memory bandwidth); the fixed start-up cost is apart, since it does not grow with the batch.
    efficiency = serial["per_prompt_seconds"]["mean"] / per_prompt
    workers = cluster["workers"]

    def projected_ratio(n: int) -> float:
        serial_time = serial["overhead_seconds"] + n * serial["per_prompt_seconds"]["mean"]
        return serial_time / (cluster["overhead_seconds"] + -(-n // workers) * per_prompt)

    worker_gib = cluster["peak_rss_mib_per_worker"] / 1024
    by_cores = args.machine_cores // args.threads
    by_memory = int((args.machine_gib * 0.9) // worker_gib)
    per_machine = max(1, min(by_cores, by_memory))
    graphs_per_hour_worker = 3600 / per_prompt
    return {
        "measured_speedup": speedup,
        "parallel_efficiency": efficiency,
        "projected_speedup": {str(n): projected_ratio(n) for n in (64, 1024, 10000)},
        "memory_per_worker_gib": worker_gib,
        "graphs_per_hour_per_worker": graphs_per_hour_worker,
        "machine": {"cores": args.machine_cores, "gib": args.machine_gib, "threads_per_worker": args.threads},
        "workers_per_machine": {"by_cores": by_cores, "by_memory": by_memory, "used": per_machine},
        "fleet": [
            {
                "machines": n,
                "workers": n * per_machine,
                "graphs_per_hour": n * per_machine * graphs_per_hour_worker * min(efficiency, 1.0),
            }
            for n in args.machines
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=int, default=64, help="Feature budget per prompt.")
    ap.add_argument("--features", type=int, default=4096, help="Transcoder features per layer.")
    ap.add_argument("--machine-cores", type=int, default=16)
    ap.add_argument("--machine-gib", type=float, default=64)
    ap.add_argument("--machines", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--out", default=str(HERE / "results" / "batch.json"))
    args = ap.parse_args()

    import torch

    from tracewire.batch import AttributionSettings, PromptJob
    from tracewire.batch.prompts import default_slug
    from tracewire.models.loading import load_model
    from tracewire.transcoders.calibrated import calibrated_random_plt
    from tracewire.transcoders.io import save_transcoders

    WORK.mkdir(parents=True, exist_ok=True)
    tc = WORK / f"tc-relu-{args.features}-100"
    if not (tc / "config.yaml").exists():
        lm = load_model("smollm2-135m")
        save_transcoders(calibrated_random_plt(lm, n_features=args.features, target_active=100), tc)
        del lm
    jobs = [PromptJob(default_slug(i, p), p) for i, p in enumerate(prompts(args.prompts))]
    settings = AttributionSettings(
        model="smollm2-135m", transcoders=str(tc), device="cpu", threads=args.threads,
        max_feature_nodes=args.budget,
    )  # fmt: skip
    serial = run(jobs, settings, WORK / "batch-serial", workers=0)
    print(f"serial ({args.threads} thread): {json.dumps(serial)}", flush=True)
    cluster = run(jobs, settings, WORK / "batch-ray", workers=args.workers)
    print(f"ray ({args.workers} workers x {args.threads} thread): {json.dumps(cluster)}", flush=True)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
        },
        "prompts": args.prompts,
        "budget": args.budget,
        "features": args.features,
        "serial": serial,
        "ray": cluster,
        "wall_time_ratio": serial["wall_seconds"] / cluster["wall_seconds"],
        "plan": plan(serial, cluster, args),
    }
    out = Path(args.out)
    from tracewire.atomic import atomic_write_json

    atomic_write_json(out, result)
    p = result["plan"]
    print(
        f"\n{args.prompts} prompts: serial {serial['wall_seconds']:.0f}s, {args.workers} Ray workers "
        f"{cluster['wall_seconds']:.0f}s -> {result['wall_time_ratio']:.2f}x "
        f"(start-up {cluster['overhead_seconds']:.0f}s vs {serial['overhead_seconds']:.0f}s serial; steady-state "
        f"efficiency {p['parallel_efficiency']:.0%}, projected {p['projected_speedup']['64']:.2f}x at 64 prompts); "
        f"per prompt {cluster['per_prompt_seconds']['mean']:.1f}s, "
        f"{p['memory_per_worker_gib']:.2f} GiB and {p['graphs_per_hour_per_worker']:.0f} graphs/hour per worker"
    )
    for row in p["fleet"]:
        print(f"  {row['machines']:3d} machines x {p['workers_per_machine']['used']} workers: "
              f"{row['graphs_per_hour']:,.0f} graphs/hour")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
