"""Benchmark: train a transcoder set on SmolLM2-135M and evaluate it (not a unit test).

Measures, in one process on one machine:

1. bare model throughput: full forward (fp32) tokens/s on corpus windows of the run's shape;
2. training throughput: tokens/s of the whole training step (truncated forward with hooks +
   transcoder forward/backward/Adam), and its ratio to (1) — the issue's goal is >= 50%;
3. quality of the result on held-out windows: per-layer NMSE, L0, dead fraction, and the spliced
   replacement model's KL, top-1 agreement and CE loss recovered.

Usage (defaults = ``fast_default_config()``, the recipe ``tracewire demo`` uses)::

    python benchmarks/training.py -o /tmp/bench-fast [--tokens N] [--features F] [--activation A] [--k K]
        [--kind K] [--bf16|--fp32] [--model-bf16] [--corpus DIR] [--eval-windows 32] [--max-minutes 12]

Writes ``benchmark.json`` next to the transcoders, curves and ``eval.json``/``eval.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from tracewire.corpus import TokenCorpus, default_corpus_dir
from tracewire.models.loading import load_model
from tracewire.training import ModelActivations, fast_default_config, train_transcoders
from tracewire.training.evaluate import evaluate_transcoders, write_eval_report


def bare_forward_tokens_per_second(
    loaded, corpus: TokenCorpus, seq_len: int, batch: int, repeats: int = 3
) -> float:
    ids = corpus.batch(range(batch), seq_len)
    with torch.no_grad():
        loaded.model(ids, use_cache=False)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            loaded.model(ids, use_cache=False)
        seconds = (time.perf_counter() - start) / repeats
    return batch * seq_len / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument("--activation", default=None)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--kind", default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument(
        "--bf16", action="store_true", default=None, help="bf16 autocast for the transcoder step"
    )
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 transcoder step")
    parser.add_argument("--model-bf16", action="store_true", help="bf16 autocast for the model forward")
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="cap the training loop's wall time, then export what was trained (the demo's mode)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    changes = {
        "tokens": args.tokens, "features": args.features, "activation": args.activation, "kind": args.kind,
        "lr": args.lr, "batch_windows": args.batch, "seq_len": args.seq_len,
    }  # fmt: skip
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.activation in ("relu", "jumprelu"):
        changes["k"] = None
    if args.k is not None:
        changes["k"] = args.k
    if args.bf16 is not None:
        changes["autocast"] = args.bf16
    config = fast_default_config().replace(**changes, model_autocast=args.model_bf16)
    loaded = load_model(args.model)
    corpus = TokenCorpus(args.corpus or default_corpus_dir(args.model))
    bare = bare_forward_tokens_per_second(loaded, corpus, config.seq_len, config.batch_windows)
    logging.info("bare forward: %.0f tokens/s", bare)

    source = ModelActivations(
        loaded, corpus, input_site=config.input_site, output_site=config.output_site, seq_len=config.seq_len,
        batch_windows=config.batch_windows, eval_windows=max(config.eval_windows, args.eval_windows),
        autocast=config.model_autocast,
    )  # fmt: skip
    start = time.perf_counter()
    limit = args.max_minutes * 60 if args.max_minutes else None
    result = train_transcoders(config, source, args.out, resume=args.resume, model_name=args.model,
                               time_limit_s=limit, finish_at_time_limit=True)  # fmt: skip
    wall = time.perf_counter() - start
    train_tps = result.report["tokens_per_second"]

    bare_after = bare_forward_tokens_per_second(loaded, corpus, config.seq_len, config.batch_windows)
    seconds = result.report["seconds"]
    # The in-run ratio: the same steps' forward time vs forward + transcoder time, so load changes on a
    # shared machine hit both sides equally (the bare numbers before/after can differ by 5x there).
    in_run_ratio = seconds["activations"] / (seconds["activations"] + seconds["train"])
    t0 = time.perf_counter()
    report = evaluate_transcoders(loaded, result.transcoders, corpus, seq_len=config.seq_len,
                                  n_windows=args.eval_windows, batch_windows=8)  # fmt: skip
    eval_seconds = time.perf_counter() - t0
    write_eval_report(report, args.out)
    summary = {
        "config": config.to_dict(),
        "steps_done": result.report["steps"],
        "tokens_trained": result.report["tokens"],
        "torch_threads": torch.get_num_threads(),
        "bare_forward_tokens_per_s": {"before": round(bare, 1), "after": round(bare_after, 1)},
        "training_tokens_per_s": train_tps,
        "training_vs_bare_before": round(train_tps / bare, 3) if train_tps else None,
        "training_vs_forward_in_run": round(in_run_ratio, 3),
        "seconds": {"train_wall": round(wall, 1), **result.report["seconds"], "eval": round(eval_seconds, 1)},
        "train_eval_nmse": result.report["eval"]["nmse_mean"],
        "heldout": {k: report[k] for k in ("nmse_mean", "l0_mean", "dead_frac_mean", "nmse_per_layer")},
        "spliced": report["spliced"],
    }
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    sp = report["spliced"]
    print(
        f"bare forward {bare:.0f} tok/s before, {bare_after:.0f} after | training {train_tps:.0f} tok/s = "
        f"{in_run_ratio:.0%} of the same run's forward-only throughput | wall {wall:.0f}s, "
        f"{result.report['tokens']:,} tokens\nheld-out NMSE {report['nmse_mean']:.3f}  L0 {report['l0_mean']:.1f}  "
        f"dead {report['dead_frac_mean']:.3f}\nspliced KL {sp['kl']:.3f}  top-1 {sp['top1_agreement']:.1%}  "
        f"CE recovered {sp['ce_recovered']:.1%} (orig {sp['ce_orig']:.3f}, spliced {sp['ce_spliced']:.3f}, "
        f"zero-ablated {sp['ce_zero_ablated']:.3f})"
    )


if __name__ == "__main__":
    main()
