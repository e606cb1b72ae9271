"""Case study: does the attribution graph of "The capital of France is" say what the model does?

1. Attribute the prompt with trained transcoders (the shipped ``smollm2-135m`` set by default).
2. Ablate the graph's most influential features (all at once, then one by one) in the real model
   with attention frozen and later features recomputed — does P(" Paris") drop?
3. Steer: scale the most influential last-position feature up and down and compare continuations.

Run after the README's setup (or pass your own transcoders):

    python examples/france_case_study.py [--transcoders DIR] [--top 10]
"""

from __future__ import annotations

import argparse

import torch

import tracewire
from tracewire.graph.influence import node_influence
from tracewire.interventions import Intervention

PROMPT = "The capital of France is"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transcoders", default="smollm2-135m", help="folder, hub ref or preset name")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--budget", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)

    model = tracewire.load_model("smollm2-135m")
    transcoders = tracewire.load_transcoders(args.transcoders, n_layers=model.n_layers, d_model=model.d_model)
    paris = model.token_id(" Paris")
    graph = tracewire.attribute(PROMPT, model, transcoders, max_feature_nodes=args.budget, progress=False)
    influence = node_influence(graph)[: graph.n_features]
    order = influence.argsort(descending=True)[: args.top].tolist()
    top = [tuple(graph.features[i].tolist()) for i in order]

    def p_paris(interventions: list[Intervention], **kw: object) -> float:
        logits, _ = tracewire.intervene(model, transcoders, PROMPT, interventions, **kw)
        return float(logits[-1].float().softmax(-1)[paris])

    base = p_paris([])
    print(
        f'prompt {PROMPT!r}: P(" Paris") = {base:.4f}; graph: {graph.n_features} features, '
        f"{graph.n_edges} edges"
    )
    print(f"\nablating the top {args.top} features by influence, one at a time:")
    print(f"{'layer':>5} {'pos':>4} {'feature':>8} {'influence':>10} {'P(Paris)':>9} {'change':>8}")
    for (layer, pos, feat), i in zip(top, order):
        p = p_paris([Intervention.ablate(layer, pos, feat)])
        print(f"{layer:5d} {pos:4d} {feat:8d} {float(influence[i]):10.4f} {p:9.4f} {p - base:+8.4f}")
    all_off = [Intervention.ablate(layer, pos, feat) for layer, pos, feat in top]
    p_all = p_paris(all_off)
    print(f'all {args.top} ablated together: P(" Paris") {base:.4f} -> {p_all:.4f} ({p_all - base:+.4f})')
    p_real = p_paris(all_off, freeze_attention=False, propagate="model")
    print(f"same, real MLPs downstream and live attention: {p_real:.4f} ({p_real - base:+.4f})")

    last = [f for f in top if f[1] == graph.n_pos - 1] or top
    layer, pos, feat = last[0]
    print(f"\nsteering feature L{layer}/F{feat} at position {pos}:")
    for factor in (1.0, 0.0, 5.0, -5.0):
        steer = [] if factor == 1.0 else [Intervention.scale_by(layer, pos, feat, factor)]
        gen = tracewire.generate(model, transcoders, PROMPT, steer, max_new_tokens=12)
        print(f"  x{factor:>4}: P(Paris)={p_paris(steer):.4f}  {PROMPT}{gen.text!r}")


if __name__ == "__main__":
    main()
