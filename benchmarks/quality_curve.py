"""Quality against tokens seen: held-out NMSE and graph replacement / completeness of a training run's
checkpoints, so the recipe's choices and "how much more training would it take" rest on numbers.

Each checkpoint (``step-*.safetensors`` + ``.json`` written by ``tracewire train``; keep the ones
you want with hard links, since the trainer keeps only the last two) is exported exactly as the
finished run would be, then measured on the held-out tail of the default corpus (NMSE, L0) and on
the demo's showcase prompts (replacement and completeness of the unpruned graph at ``--budget``).
A power law ``NMSE(t) = a + b·t^(−c)`` fitted to the points extrapolates the tokens a target
NMSE needs (``--target``).

    python benchmarks/quality_curve.py CHECKPOINT_DIR [CHECKPOINT_DIR ...] [--final RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from tracewire.atomic import atomic_write_json
from tracewire.attribution.engine import attribute
from tracewire.corpus import TokenCorpus, default_corpus_dir
from tracewire.demo.pipeline import SHOWCASE
from tracewire.graph.scores import graph_scores
from tracewire.models.loading import load_model
from tracewire.training.checkpoint import read_checkpoint
from tracewire.training.config import TrainConfig
from tracewire.training.evaluate import evaluate_transcoders
from tracewire.training.module import TrainableTranscoders
from tracewire.transcoders import load_transcoders

RESULTS = Path(__file__).parent / "results"


def export_checkpoint(state_path: Path, n_layers: int, d_model: int):
    """The transcoder set a checkpoint would export, and the tokens it had seen."""
    checkpoint = read_checkpoint(state_path.parent, int(state_path.stem.removeprefix("step-")))
    config = TrainConfig(**checkpoint.state["config"])
    module = TrainableTranscoders(config, n_layers, d_model, torch.Generator().manual_seed(0))
    module.load_state_dict(
        {k[len("module.") :]: v for k, v in checkpoint.tensors.items() if k.startswith("module.")}
    )
    return module.export(model_name="smollm2-135m"), int(checkpoint.state["tokens_seen"])


def measure(loaded, ts, corpus, args) -> dict:
    rec = evaluate_transcoders(loaded, ts, corpus, seq_len=128, n_windows=args.windows, progress=False)
    repl, compl = [], []
    for _, prompt in SHOWCASE:
        scores = graph_scores(attribute(prompt, loaded, ts, max_feature_nodes=args.budget, progress=False))
        repl.append(scores.replacement)
        compl.append(scores.completeness)
    return {
        "nmse_mean": rec["nmse_mean"],
        "nmse_max": max(rec["nmse_per_layer"]),
        "l0_mean": rec["l0_mean"],
        "spliced_top1": rec["spliced"]["top1_agreement"],
        "ce_recovered": rec["spliced"]["ce_recovered"],
        "replacement_mean": sum(repl) / len(repl),
        "completeness_mean": sum(compl) / len(compl),
    }


def fit_power_law(points: list[tuple[float, float]]) -> dict | None:
    """Least squares of ``nmse = a + b·t^(−c)`` over a grid of ``c`` (a, b linear for fixed c)."""
    if len(points) < 3:
        return None
    best = None
    for i in range(1, 200):
        c = i / 100
        xs = [t ** (-c) for t, _ in points]
        ys = [v for _, v in points]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx == 0:
            continue
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        a = my - b * mx
        err = sum((a + b * x - y) ** 2 for x, y in zip(xs, ys))
        if best is None or err < best["sse"]:
            best = {"a": a, "b": b, "c": c, "sse": err}
    return best


def fit_log_linear(points: list[tuple[float, float]]) -> dict | None:
    """Least squares of ``nmse = a + b·ln t``: what the points follow when the power law's exponent
    goes to 0 (no visible asymptote yet, a constant drop per doubling of tokens)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(t) for t, _ in points], [v for _, v in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    sse = sum((a + b * x - y) ** 2 for x, y in zip(xs, ys))
    return {"form": "a + b*ln(t)", "a": a, "b": b, "per_doubling": b * math.log(2), "sse": sse}


def best_fit(points: list[tuple[float, float]]) -> dict | None:
    """The power law, unless its exponent sits at the grid's lower edge: then the log-linear law."""
    power = fit_power_law(points)
    if power is not None and power["c"] > 0.01:
        return {"form": "a + b*t^(-c)", **power}
    return fit_log_linear(points)


def tokens_for(fit: dict | None, target: float) -> float | None:
    """Tokens at which the fitted curve reaches ``target`` (None if it never does)."""
    if fit is None or fit["b"] == 0:
        return None
    if fit["form"] == "a + b*ln(t)":
        return math.exp((target - fit["a"]) / fit["b"]) if fit["b"] < 0 else None
    if fit["a"] >= target or fit["b"] <= 0:
        return None
    return ((target - fit["a"]) / fit["b"]) ** (-1 / fit["c"])


def summarise(rows: list[dict], target: float, windows: int, budget: int) -> dict:
    """The points with the fits of the mean and the worst layer's NMSE and the tokens each needs."""
    fit = best_fit([(r["tokens"], r["nmse_mean"]) for r in rows])
    worst = best_fit([(r["tokens"], r["nmse_max"]) for r in rows])
    return {
        "points": rows, "nmse_fit": fit, "target_nmse": target, "tokens_for_target": tokens_for(fit, target),
        "worst_layer_fit": worst, "worst_layer_target": 0.35, "tokens_for_worst_layer": tokens_for(worst, 0.35),
        "windows": windows, "budget": budget,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", type=Path, nargs="*", help="folders holding step-*.json checkpoints")
    parser.add_argument("--refit", action="store_true", help="only refit the points already in --out")
    parser.add_argument("--final", type=Path, default=None, help="the finished run (its training.json)")
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--target", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-curve.json")
    args = parser.parse_args()

    if args.refit:
        old = json.loads(args.out.read_text())
        result = summarise(old["points"], args.target, old["windows"], old["budget"])
        atomic_write_json(args.out, result)
        print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=1))
        return
    loaded = load_model("smollm2-135m")
    corpus = TokenCorpus(default_corpus_dir(loaded.name))
    states = sorted({p for d in args.checkpoints for p in d.glob("step-*.json")}, key=lambda p: p.name)
    rows = []
    for state in states:
        ts, tokens = export_checkpoint(state, loaded.n_layers, loaded.d_model)
        rows.append({"checkpoint": state.name, "tokens": tokens, **measure(loaded, ts, corpus, args)})
        print(json.dumps(rows[-1]), flush=True)
    if args.final is not None:
        report = json.loads((args.final / "training.json").read_text())
        ts = load_transcoders(args.final, n_layers=loaded.n_layers, d_model=loaded.d_model)
        rows.append({"checkpoint": "final", "tokens": report["tokens"], **measure(loaded, ts, corpus, args)})
        print(json.dumps(rows[-1]), flush=True)
    result = summarise(rows, args.target, args.windows, args.budget)
    fit, needed = result["nmse_fit"], result["tokens_for_target"]
    atomic_write_json(args.out, result)
    _plot(rows, args.out.with_suffix(".png"))
    print(f"fit {fit}; tokens for NMSE {args.target}: {needed if needed is None else f'{needed:,.0f}'}")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [r["tokens"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, [r["nmse_mean"] for r in rows], "o-", label="held-out NMSE (mean)")
    ax.plot(tokens, [r["nmse_max"] for r in rows], "o--", label="held-out NMSE (worst layer)")
    ax.plot(tokens, [r["replacement_mean"] for r in rows], "s-", label="replacement (showcase mean)")
    ax.plot(tokens, [r["completeness_mean"] for r in rows], "s--", label="completeness (showcase mean)")
    ax.axhline(0.25, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M skip transcoders: quality vs tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
