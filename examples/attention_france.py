"""Worked example: which head moves "France" to the last position, and why does it attend there?

On SmolLM2-135M and "The capital of France is":

1. attribute the prompt (the graph's top target is the " Paris" logit);
2. head loadings: split every source's effect on the " Paris" logit into a direct part and
   per-(layer, head) parts (a path counts for the *last* head it crosses), and sum the parts of
   the sources at the "France" position: the head with the largest share is the one that moves
   the country to the last position;
3. QK attribution of that head at (query = last position, key = "France"): its score as a sum of
   (query-side node, key-side node) pairs plus constants, with the top pairs and each side's totals.

Transcoders: the shipped ones when given (``--transcoders DIR``), else calibrated random ones
(``tracewire.transcoders.calibrated``: realistic shape, meaningless features — so read the
*errors* and *tokens* among the pairs as "the model's own computation at that position").

    python examples/attention_france.py [--transcoders DIR] [--budget 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import tracewire
from tracewire.attention import TraceContext, head_geometry, qk_attribution, target_loadings
from tracewire.transcoders.calibrated import calibrated_random_plt

PROMPT = "The capital of France is"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transcoders", type=Path, default=None)
    ap.add_argument("--budget", type=int, default=256, help="feature nodes of the graph")
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    model = tracewire.load_model("smollm2-135m")
    if args.transcoders is not None:
        transcoders = tracewire.load_transcoders(
            args.transcoders, n_layers=model.n_layers, d_model=model.d_model
        )
    else:
        transcoders = calibrated_random_plt(model, n_features=4096, target_active=100)
    timings["load model + transcoders"] = time.perf_counter() - clock

    clock = time.perf_counter()
    graph = tracewire.attribute(PROMPT, model, transcoders, max_feature_nodes=args.budget, progress=False)
    timings["attribute"] = time.perf_counter() - clock
    tokens = graph.token_strings
    france = next(i for i, t in enumerate(tokens) if "France" in t)
    last = graph.n_pos - 1
    target = graph.target_index(0)
    print(
        f"prompt {PROMPT!r}: tokens {tokens}; top target {graph.target_labels[0]!r} "
        f"(p = {float(graph.target_probabilities[0]):.3f}); "
        f"graph {graph.n_features} features, {graph.n_edges} edges"
    )

    # 2. head loadings of every source's effect on the " Paris" logit
    clock = time.perf_counter()
    ctx = TraceContext.build(graph, model, transcoders)
    timings["trace context (clean run + sources)"] = time.perf_counter() - clock
    clock = time.perf_counter()
    split = target_loadings(ctx, target)
    timings["head loadings of one target (all sources)"] = time.perf_counter() - clock
    at_france = torch.tensor([ctx.sources.describe(i)["pos"] == france for i in range(ctx.sources.size)])
    per_head = split.heads[:, :, at_france].sum(-1)  # [layers, heads]: what each head carries from "France"
    total = float(split.direct[at_france].sum() + per_head.sum())
    geometry = head_geometry(ctx.rm)
    print(
        f"\neffect of the {int(at_france.sum())} sources at position {france} ({tokens[france]!r}) on "
        f"{graph.target_labels[0]!r}: {total:+.3f} = "
        f"direct {float(split.direct[at_france].sum()):+.3f} + heads"
    )
    order = torch.argsort(per_head.flatten(), descending=True)[:5]
    print("largest head parts (a path counts for the last head it crosses):")
    for flat in order.tolist():
        layer, head = divmod(flat, geometry.n_heads)
        share = float(per_head[layer, head])
        print(f"  layer {layer:2d} head {head} (kv head {geometry.kv_head(head)}): {share:+.3f}")
    layer, head = divmod(int(order[0]), geometry.n_heads)

    # 3. why that head attends from the last position to "France"
    clock = time.perf_counter()
    (qk,) = qk_attribution(graph, ctx, layer=layer, head=head, query=last, keys=[france])
    timings["QK attribution of one (head, query, key)"] = time.perf_counter() - clock
    summary = qk.to_json(n_pairs=args.pairs, n_marginals=args.pairs)
    print(
        f"\nlayer {layer} head {head} at query {last} ({tokens[last]!r}) -> "
        f"key {france} ({tokens[france]!r}): "
        f"score {qk.score:.3f}, attention weight {qk.pattern:.3f}"
    )
    print(
        f"  = pairs {summary['pair_total']:+.3f} + constants "
        + ", ".join(f"{k} {v:+.3f}" for k, v in summary["constants"].items())
        + f"  (check: {qk.decomposed_score():.5f})"
    )

    def label(source: dict) -> str:
        kind, pos = source["kind"], source["pos"]
        what = (
            f"L{source['layer']}#{source['feature']}"
            if kind == "feature"
            else (f"L{source['layer']}" if kind == "error" else "")
        )
        return f"{kind} {what} @{pos} {tokens[pos]!r}"

    print("  top pairs (query-side node | key-side node):")
    for pair in summary["pairs"]:
        print(f"    {pair['value']:+8.3f}  {label(pair['query_source']):32s} | {label(pair['key_source'])}")
    for side in ("query", "key"):
        print(f"  {side}-side totals (constant {summary[side + '_constant_marginal']:+.3f}):")
        for item in summary[f"{side}_marginals"][:5]:
            print(f"    {item['value']:+8.3f}  {label(item['source'])}")

    print("\ntimings (s):")
    for name, seconds in timings.items():
        print(f"  {name:45s} {seconds:7.2f}")


if __name__ == "__main__":
    main()
