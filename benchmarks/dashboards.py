"""Benchmark: feature dashboards for SmolLM2-135M with random calibrated transcoders (not a unit test).

Measures, in one process:

1. the truncated model forward alone (all layers, no unembedding), tokens/s: the floor of any build;
2. a dashboard build of every feature of the selected layers over ``--tokens`` corpus tokens:
   tokens/s and token-features/s of the activation pass (overall, and in steady state = the last
   half of the batches, once the example slots have filled), plus the one-off card-writing time;
3. the extrapolated time of the issue's goal (30 layers x 4096 features over 1M tokens);
4. card lookups from the finished store (``FeatureStore.card``): median / p95 / max ms.

Usage::

    python benchmarks/dashboards.py [--tokens 4096] [--features 4096] [--layers 0-29] [--batch-windows 8]
        [--bf16] [--threads N] [--corpus DIR] [--keep DIR] [--lookups 300] [--json out.json]

On a shared machine, ``--threads 1`` is often faster than two threads fighting other jobs for cores.

The corpus defaults to the model's default corpus (``tracewire corpus build``); without one, a
small corpus is built from this repository's Markdown files.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracewire.corpus import TokenCorpus, build_corpus, local_source
from tracewire.corpus.build import default_corpus_dir
from tracewire.dashboards import DashboardConfig, FeatureStore, build_feature_store
from tracewire.dashboards.capture import layer_inputs
from tracewire.dashboards.selection import FeatureSelection, parse_range
from tracewire.models.loading import load_model
from tracewire.transcoders.calibrated import calibrated_random_plt

log = logging.getLogger("benchmark")
GOAL_TOKENS, GOAL_LAYERS, GOAL_FEATURES, GOAL_SECONDS = 1_000_000, 30, 4096, 3600.0


def corpus_for(loaded: Any, path: Path | None, work: Path) -> TokenCorpus:
    directory = path or default_corpus_dir("smollm2-135m")
    if (directory / "manifest.json").exists():
        return TokenCorpus(directory)
    log.info("no corpus at %s: building a small one from this repository's Markdown files", directory)
    texts = work / "texts"
    texts.mkdir(parents=True, exist_ok=True)
    for i, md in enumerate(sorted(Path(__file__).resolve().parents[1].rglob("*.md"))):
        (texts / f"{i:04d}.md").write_text(md.read_text(errors="replace"))
    build_corpus(
        work / "corpus",
        tokenizer=loaded.tokenizer,
        bos_token_id=loaded.bos_token_id,
        model_name="smollm2-135m",
        sources=[local_source(texts)],
        raw_dir=work / "raw",
        fetch=False,
    )
    return TokenCorpus(work / "corpus")


def forward_tokens_per_second(
    loaded: Any, corpus: TokenCorpus, seq_len: int, batch: int, layers: list[int]
) -> float:
    ids = corpus.batch(range(batch), seq_len)
    layer_inputs(loaded, ids, "mlp_in", layers)  # warm-up
    start = time.perf_counter()
    repeats = 2
    for _ in range(repeats):
        layer_inputs(loaded, ids, "mlp_in", layers)
    return repeats * batch * (seq_len - 1) / (time.perf_counter() - start)


def lookup_times(path: Path, n: int, seed: int = 0) -> dict[str, float]:
    with FeatureStore(path, readonly=True) as store:
        keys = store.features()
        rng = random.Random(seed)
        sample = [rng.choice(keys) for _ in range(n)]
        start = time.perf_counter()
        store.card(*sample[0])
        first = (time.perf_counter() - start) * 1000
        times = []
        for key in sample[1:]:
            start = time.perf_counter()
            card = store.card(*key)
            card.to_json() if card is not None else None
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "first_ms": first,
        "median_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "max_ms": times[-1],
        "lookups": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--features", type=int, default=4096, help="features per layer")
    parser.add_argument("--layers", default=None, help="layer range, e.g. 0-29 (default: all)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-windows", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="model and transcoders in bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write the store here (default: a temp dir)")
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="tracewire-dash-bench-"))
    t0 = time.perf_counter()
    loaded = load_model("smollm2-135m", dtype=dtype)
    transcoders = calibrated_random_plt(loaded, n_features=args.features).to(dtype=dtype)
    setup = time.perf_counter() - t0
    corpus = corpus_for(loaded, args.corpus, work)
    layers = parse_range(args.layers, "--layers") or range(loaded.n_layers)
    selection = FeatureSelection({layer: None for layer in layers})
    n_features = selection.count(transcoders.d_transcoder)
    forward = forward_tokens_per_second(loaded, corpus, args.seq_len, args.batch_windows, list(layers))
    log.info("setup %.1fs; truncated forward to layer %d: %.0f tok/s", setup, max(layers), forward)

    stamps: list[float] = []
    store_path = (args.keep or work) / "features.sqlite"
    if store_path.exists():
        store_path.unlink()
    report = build_feature_store(
        loaded,
        transcoders,
        corpus,
        store_path,
        tokens=args.tokens,
        selection=selection,
        config=DashboardConfig(seq_len=args.seq_len),
        batch_windows=args.batch_windows,
        names={"model": "smollm2-135m", "transcoders": transcoders.config.scan},
        progress=False,
        on_batch=lambda _i: stamps.append(time.perf_counter()),
    )
    tokens_per_batch = args.batch_windows * (args.seq_len - 1)
    half = len(stamps) // 2
    steady = (
        (len(stamps) - 1 - half) * tokens_per_batch / (stamps[-1] - stamps[half])
        if len(stamps) - half > 1
        else 0.0
    )
    rate = report.tokens_per_second
    goal_rate = max(steady, rate)
    goal_scale = GOAL_LAYERS * GOAL_FEATURES / n_features
    goal_seconds = GOAL_TOKENS / goal_rate * goal_scale + report.finalize_seconds * goal_scale
    results = {
        "device": str(loaded.device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "layers": [layers.start, layers.stop - 1],
        "features": n_features,
        "tokens": report.tokens,
        "forward_tokens_per_s": forward,
        "pass_seconds": report.pass_seconds,
        "pass_tokens_per_s": rate,
        "pass_token_features_per_s": rate * n_features,
        "steady_tokens_per_s": steady,
        "steady_token_features_per_s": steady * n_features,
        "firing_events_per_token_and_layer": report.firing_events / max(1, report.tokens) / len(layers),
        "cards_seconds": report.finalize_seconds,
        "goal_estimate_seconds": goal_seconds,
        "goal_seconds": GOAL_SECONDS,
        "store_mb": store_path.stat().st_size / 2**20,
        "lookup": lookup_times(store_path, args.lookups),
    }
    log.info("%s", json.dumps(results, indent=1))
    log.info(
        "pass: %.0f tok/s (%.2e token-features/s), steady %.0f tok/s; forward alone %.0f tok/s; "
        "cards %.1fs for %d features",
        rate,
        rate * n_features,
        steady,
        forward,
        report.finalize_seconds,
        n_features,
    )
    log.info(
        "goal (30 x 4096 features over 1M tokens): about %.0f min here (goal: < 60 min)", goal_seconds / 60
    )
    log.info(
        "card lookup: median %.2f ms, p95 %.2f ms (goal: < 10 ms)",
        results["lookup"]["median_ms"],
        results["lookup"]["p95_ms"],
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
