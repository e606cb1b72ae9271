"""The shipped SmolLM2-135M transcoder set against the bars of its issue, in one run.

1. Held-out reconstruction (``training.evaluate``): NMSE / L0 / dead per layer and the spliced
   model (every MLP replaced, no errors): KL, top-1 agreement, CE loss recovered — on the last
   ``--windows`` windows of ``--seq-len`` tokens of the default corpus, which the training run held out.
2. Graphs: 20 prompts of five kinds (facts, antonyms and word forms, code, arithmetic, multi-token
   names) plus the demo's showcase prompts, each answered right by the model (checked here):
   replacement and completeness of the unpruned graph at a 2,048-feature budget, and the
   faithfulness harness's real-model setting (``model``: live attention, real MLPs, ablations
   written through the decoders) for the top-k features by influence — correlation of predicted
   and actual target changes.
3. circuit-tracer 0.5.0 (``CT_PYTHON``, its own venv) loads the folder unchanged with its own
   loader, and its encoder and decoder give ours on the same inputs.

Writes ``benchmarks/results/quality-set.json`` (and prints a table per prompt).

    python benchmarks/quality_set.py [--transcoders smollm2-135m] [--skip-graphs] [--skip-ct]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tracewire.atomic import atomic_write_json
from tracewire.attribution.engine import attribute
from tracewire.corpus import TokenCorpus, default_corpus_dir
from tracewire.demo.pipeline import SHOWCASE
from tracewire.evaluation.harness import evaluate_graph
from tracewire.graph.scores import graph_scores
from tracewire.models.loading import load_model
from tracewire.training.evaluate import evaluate_transcoders
from tracewire.transcoders import load_transcoders
from tracewire.transcoders.sources import resolve_source

RESULTS = Path(__file__).parent / "results" / "quality-set.json"

#: (kind, prompt, the answer the model gives — checked before the graph is made)
PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("fact", "The capital of Germany is", " Berlin"),
    ("fact", "The capital of Japan is", " Tokyo"),
    ("fact", "The capital of Italy is", " Rome"),
    ("fact", "Paris is the capital of", " France"),
    ("fact", "Water freezes at zero degrees", " Celsius"),
    ("fact", "The chemical symbol for gold is", " Au"),
    ("fact", "The first president of the United States was George", " Washington"),
    ("antonym", "The opposite of up is", " down"),
    ("antonym", "The opposite of day is", " night"),
    ("word form", "The plural of mouse is", " mice"),
    ("code", "def add(a, b):\n    return a", " +"),
    ("code", "import numpy as", " np"),
    ("arithmetic", "1 + 1 = ", "2"),
    ("arithmetic", "2 + 2 = ", "4"),
    ("arithmetic", "2 + 3 = 5, 4 + 4 = ", "8"),
    ("name", "Harry Potter was written by J.K.", " Row"),
    ("name", "Apple was founded by Steve", " Jobs"),
    ("name", "The Mona Lisa was painted by Leonardo da", " Vinci"),
    ("name", "Shakespeare wrote Romeo and", " Juliet"),
    ("sequence", "January, February, March,", " April"),
)

CT_CHECK = r"""
import sys, torch
from safetensors.torch import load_file, save_file
from circuit_tracer.utils.hf_utils import load_transcoder_from_hub
ts, cfg = load_transcoder_from_hub(sys.argv[1], device=torch.device("cpu"), dtype=torch.float32,
                                   lazy_encoder=False, lazy_decoder=False)
x = load_file(sys.argv[2])
out = {}
for layer in range(len(ts)):
    t = ts[layer]
    acts = t.encode(x[f"x{layer}"])
    out[f"acts{layer}"] = acts.contiguous()
    out[f"recon{layer}"] = t.decode(acts, x[f"x{layer}"]).contiguous() if t.W_skip is not None else t.decode(acts).contiguous()
save_file(out, sys.argv[3])
print(f"circuit-tracer loaded {len(ts)} layers, d_transcoder {ts[0].d_transcoder}, hooks {cfg.get('feature_input_hook')} -> {cfg.get('feature_output_hook')}")
"""


def reconstruction(loaded, ts, args) -> dict:
    corpus = TokenCorpus(default_corpus_dir(loaded.name))
    return evaluate_transcoders(loaded, ts, corpus, seq_len=args.seq_len, n_windows=args.windows)


def graphs(loaded, ts, args) -> list[dict]:
    rows = []
    cases: list[tuple[str, str, str | None]] = [
        *PROMPTS,
        *(("showcase", prompt, None) for _, prompt in SHOWCASE),
    ]
    for kind, prompt, expected in cases:
        ids = loaded.encode(prompt, prepend_bos=True)
        with torch.no_grad():
            probs = torch.softmax(loaded.model(ids[None]).logits[0, -1].double(), -1)
        top = int(probs.argmax())
        answer = loaded.tokenizer.decode([top])
        t0 = time.perf_counter()
        graph = attribute(prompt, loaded, ts, max_feature_nodes=args.budget, batch_size=64, progress=False)
        seconds = time.perf_counter() - t0
        scores = graph_scores(graph)
        report = evaluate_graph(graph, loaded, ts, k=args.k, n_random=0, settings=("model",), progress=False)
        top_group = report.summary["model"].get("top", {})
        row = {
            "kind": kind,
            "prompt": prompt,
            "answer": answer,
            "p": round(float(probs[top]), 4),
            "answered_right": expected is None or answer == expected,
            "features": graph.n_features,
            "active_features": graph.metadata.get("n_active_features"),
            "replacement": scores.replacement,
            "completeness": scores.completeness,
            "faithfulness_model_top_r": top_group.get("correlation"),
            "attribution_seconds": round(seconds, 2),
        }
        rows.append(row)
        print(
            f"{kind:10s} {prompt[:44]!r:48s} {answer!r:12s} p={row['p']:.2f} feats {row['features']:5d} "
            f"repl {row['replacement']:.3f} compl {row['completeness']:.3f} r {_fmt(row['faithfulness_model_top_r'])}",
            flush=True,
        )
    return rows


def circuit_tracer_check(ts, directory: Path) -> dict:
    python = os.environ.get("CT_PYTHON", "/work/ctvenv/bin/python")
    if not Path(python).exists():
        return {"skipped": f"no circuit-tracer venv at {python} (set CT_PYTHON)"}
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        generator = torch.Generator().manual_seed(0)
        inputs = {
            f"x{layer}": torch.randn(16, ts.d_model, generator=generator) * 3 for layer in range(ts.n_layers)
        }
        save_file(inputs, f"{tmp}/x.safetensors")
        done = subprocess.run(
            [python, "-c", CT_CHECK, str(directory.resolve()), f"{tmp}/x.safetensors", f"{tmp}/out.safetensors"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            return {"ok": False, "error": done.stderr[-2000:]}
        theirs = load_file(f"{tmp}/out.safetensors")
    xs = [inputs[f"x{layer}"] for layer in range(ts.n_layers)]
    acts = [ts.encode(layer, x) for layer, x in enumerate(xs)]
    recon = ts.reconstruct(xs, acts)
    worst_acts = max(float((acts[i] - theirs[f"acts{i}"]).abs().max()) for i in range(ts.n_layers))
    worst_recon = max(float((recon[i] - theirs[f"recon{i}"]).abs().max()) for i in range(ts.n_layers))
    return {
        "ok": worst_acts < 1e-3 and worst_recon < 1e-3,
        "max_abs_diff_activations": worst_acts,
        "max_abs_diff_reconstruction": worst_recon,
        "stdout": done.stdout.strip(),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _mean(values: list) -> float | None:
    numbers = [v for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transcoders", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=168)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--skip-graphs", action="store_true")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    loaded = load_model("smollm2-135m")
    directory = resolve_source(args.transcoders).directory
    ts = load_transcoders(args.transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    result: dict = {
        "transcoders": str(directory),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg(),
        },
    }
    t0 = time.perf_counter()
    result["reconstruction"] = reconstruction(loaded, ts, args)
    rec = result["reconstruction"]
    print(f"held-out ({rec['windows']['tokens']} tokens): NMSE mean {rec['nmse_mean']:.4f} max "
          f"{max(rec['nmse_per_layer']):.4f}, L0 mean {rec['l0_mean']:.1f} max {max(rec['l0_per_layer']):.1f}, "
          f"dead {rec['dead_frac_mean']:.4f}; spliced top-1 {rec['spliced']['top1_agreement']:.1%}, "
          f"CE recovered {rec['spliced']['ce_recovered']:.1%}, KL {rec['spliced']['kl']:.3f}", flush=True)  # fmt: skip
    if not args.skip_graphs:
        rows = graphs(loaded, ts, args)
        result["graphs"] = rows
        result["graphs_summary"] = {
            "n": len(rows),
            "all_answered_right": all(r["answered_right"] for r in rows),
            "replacement_mean": _mean([r["replacement"] for r in rows]),
            "completeness_mean": _mean([r["completeness"] for r in rows]),
            "faithfulness_model_top_r_mean": _mean([r["faithfulness_model_top_r"] for r in rows]),
        }
        print(json.dumps(result["graphs_summary"], indent=1))
    if not args.skip_ct:
        result["circuit_tracer"] = circuit_tracer_check(ts, directory)
        print("circuit-tracer:", json.dumps(result["circuit_tracer"])[:500])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"]["load_average_end"] = os.getloadavg()
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
