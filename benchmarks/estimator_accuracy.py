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
import sys
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
    sys.path.insert(0, str(HERE))
    lm = load_model("smollm2-135m")
    ts = load_transcoders(WORK / "tc-relu-4096-100")
    from attribution import prompt_of  # the benchmark's own prompts

    activity = measure_activity(lm, ts)
    print(f"calibration text: {activity.mean:.1f} active per token and layer, busiest {activity.busiest:.0f}")
    lines = [
        "| tokens | budget | measured peak | predicted (prompt / length only) | error | "
        "measured time | predicted (prompt / length only) | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst: dict[str, float] = {}
    for row in json.loads(Path(args.results).read_text())["rows"]:
        ours = row.get("tracewire", {})
        if "wall" not in ours:
            continue
        common = dict(max_feature_nodes=row["budget"], batch_size=args.batch_size)
        by_prompt = estimate_attribution(lm, ts, prompt=prompt_of(lm.tokenizer, row["n"]), **common)
        by_length = estimate_attribution(lm, ts, n_tokens=ours["tokens"], active=activity, **common)
        errors = {
            "memory (prompt)": by_prompt.peak_gib / ours["peak_rss_gib"] - 1,
            "memory (length)": by_length.peak_gib / ours["peak_rss_gib"] - 1,
            "time (prompt)": by_prompt.seconds / ours["wall"] - 1,
            "time (length)": by_length.seconds / ours["wall"] - 1,
        }
        inside = by_length.seconds_low * 0.75 <= ours["wall"] <= by_length.seconds * 1.25
        if not inside:
            worst["time (length) out of range"] = 1.0
        errors.pop("time (length)")
        for key, value in errors.items():
            worst[key] = max(worst.get(key, 0.0), abs(value))
        lines.append(
            f"| {ours['tokens']} | {row['budget']} | {ours['peak_rss_gib']:.2f} GiB | "
            f"{by_prompt.peak_gib:.2f} / {by_length.peak_gib:.2f} GiB | "
            f"{errors['memory (prompt)']:+.0%} / {errors['memory (length)']:+.0%} | {ours['wall']:.1f} s | "
            f"{by_prompt.seconds:.1f} / {by_length.seconds_low:.0f}–{by_length.seconds:.0f} s | "
            f"{errors['time (prompt)']:+.0%} / {'in range' if inside else 'OUT of range'} |"
        )
    print("\n".join(lines))
    print("largest |error|: " + ", ".join(f"{k} {v:.0%}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
