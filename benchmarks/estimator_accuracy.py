"""How close ``tracewire estimate`` comes to measured attribution runs.

Reads the rows that ``benchmarks/attribution.py`` wrote (wall time and peak RSS of each
tracewire run, in its own process) and predicts each with the current estimator, on the same
model and transcoders. The issue's goal is within 25% of measured at the benchmark sizes.

    python benchmarks/estimator_accuracy.py [benchmarks/results/attribution.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("TRACEWIRE_BENCH_WORK", Path(tempfile.gettempdir()) / "tracewire-bench"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default=str(HERE / "results" / "attribution.json"))
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import torch

    from tracewire.attribution.estimate import estimate_attribution, measure_activity
    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders

    torch.set_num_threads(2)
    lm = load_model("smollm2-135m")
    ts = load_transcoders(WORK / "tc-relu-4096-100")
    activity = measure_activity(lm, ts)
    print(
        f"activity on the calibration text: {activity.mean:.1f} per token and layer, busiest {activity.busiest:.0f}"
    )
    lines = [
        "| tokens | budget | measured peak | predicted | error | measured time | predicted | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst = {"memory": 0.0, "time": 0.0}
    for row in json.loads(Path(args.results).read_text())["rows"]:
        ours = row.get("tracewire", {})
        if "wall" not in ours:
            continue
        est = estimate_attribution(
            lm,
            ts,
            n_tokens=ours["tokens"],
            max_feature_nodes=row["budget"],
            batch_size=args.batch_size,
            active=activity,
        )
        mem_err = est.peak_gib / ours["peak_rss_gib"] - 1
        time_err = est.seconds / ours["wall"] - 1
        worst["memory"] = max(worst["memory"], abs(mem_err))
        worst["time"] = max(worst["time"], abs(time_err))
        lines.append(
            f"| {ours['tokens']} | {row['budget']} | {ours['peak_rss_gib']:.2f} GiB | {est.peak_gib:.2f} GiB | "
            f"{mem_err:+.0%} | {ours['wall']:.1f} s | {est.seconds:.1f} s | {time_err:+.0%} |"
        )
    print("\n".join(lines))
    print(f"largest error: memory {worst['memory']:.0%}, time {worst['time']:.0%}")


if __name__ == "__main__":
    main()
