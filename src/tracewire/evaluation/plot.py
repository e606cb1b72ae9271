"""The faithfulness report as one PNG: predicted vs actual effects, and the budget curves.

matplotlib runs on the Agg backend (no display needed); it is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path

from tracewire.evaluation.harness import FaithfulnessReport
from tracewire.evaluation.perturbation import SETTINGS

_COLORS = {"frozen_constrained": "#444444", "frozen": "#1f77b4", "unfrozen": "#ff7f0e", "model": "#d62728"}


def save_plot(report: FaithfulnessReport, path: str | os.PathLike[str]) -> Path:
    """Write the two-panel figure to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    lo, hi = 0.0, 0.0
    for name in SETTINGS:
        which = SETTINGS[name][1]
        xs = [p for r in report.ablations if name in r.actual for p in r.predicted[which]]
        ys = [a for r in report.ablations if name in r.actual for a in r.actual[name]]
        if not xs:
            continue
        stats = report.summary.get(name, {}).get("all", {})
        corr = stats.get("correlation")
        label = f"{name} (vs {which}; r={corr:.3f})" if corr is not None else f"{name} (vs {which})"
        left.scatter(xs, ys, s=10, alpha=0.6, color=_COLORS.get(name), label=label)
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
    left.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--")
    left.set_xlabel("predicted change of target (graph)")
    left.set_ylabel("actual change of target (model)")
    left.set_title(f"ablating {len(report.ablations)} features")
    left.legend(fontsize=7)

    curve = report.curve.to_json()
    budgets = [max(b, 0.5) for b in curve["budgets"]]  # budget 0 drawn at 0.5 on the log axis
    for key, color in (("replacement", "#2ca02c"), ("completeness", "#9467bd")):
        values = [float("nan") if v is None else v for v in curve[key]]
        area = curve[f"{key}_area"]
        right.plot(
            budgets,
            values,
            marker="o",
            markersize=3,
            color=color,
            label=f"{key} (area {area:.3f})" if area is not None else key,
        )
    right.set_xscale("log")
    right.set_ylim(0, 1.02)
    right.set_xlabel("feature nodes kept (by influence)")
    right.set_ylabel("score of the pruned subgraph")
    right.set_title(f"{report.n_features} feature nodes")
    right.legend(fontsize=8)
    fig.suptitle(report.prompt[-80:], fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
