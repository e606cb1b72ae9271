"""Pruning and Neuronpedia export of graphs with >= 1M edges: time and peak memory.

Run: ``python benchmarks/prune.py [--edges 1200000] [--repeats 3]``. Prints a table and writes
``benchmarks/results/prune.json``.

Two graph shapes, each with about ``--edges`` edges:

- ``sparse``: 100k features over 18 layers x 64 positions, ~11 inputs each (built directly, see
  :func:`sparse_graph`). N ≈ 101k nodes, so a dense ``N x N`` float32 matrix would take ~41 GB:
  a peak far below that shows nothing in pruning is quadratic in nodes.
- ``dense``: 5k features, 16 layers x 24 positions (``random_graph``), the shape real attribution
  graphs have (few nodes, many edges per node; compare ``benchmarks/attribution.py``).

Goal from the design: ``prune_graph`` < 2 s for >= 1M edges on this 2-core machine.

Peak memory of one call is the rise of the process's resident-set high-water mark over the
resident set before the call. The mark is reset before each measured call (``/proc/self/clear_refs``
with ``5``, after ``malloc_trim`` gives freed heap back), so each number is that call's own peak;
torch allocates outside Python's allocator, which ``tracemalloc`` would not see. Where the mark
cannot be reset, ``ru_maxrss`` is used and the number is a lower bound (marked in the output).
The first (cold) call is the one measured; the time is then the median of ``--repeats`` more,
with torch's default thread count and with one thread. The machine is shared (the load average
is recorded with the results): when other processes keep both cores busy, torch's two intra-op
threads wait on each other at every one of the many short vector operations and pruning takes
several times longer than on one thread, so both are reported, with the process CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.graph.factory import random_graph

from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import dumps, to_neuronpedia_json
from tracewire.graph.pruning import prune_graph

logger = logging.getLogger("benchmark")
RESULTS = Path(__file__).resolve().parent / "results" / "prune.json"
GOAL_S = 2.0
MiB = 1024 * 1024
T = TypeVar("T")


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else None


def _reset_peak() -> bool:
    """Release freed heap and reset the high-water mark; False where the OS does not allow it."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: freed heap stays resident
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measured(function: Callable[[], T]) -> tuple[T, float, float, bool]:
    """(result, seconds, peak MiB above the resident set before the call, exact?) of one call."""
    exact = _reset_peak()
    before_kib = _status_kib("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    after_kib = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, seconds, max(0, (after_kib or 0) - (before_kib or 0)) / 1024, exact


def median_seconds(function: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- graphs
def sparse_graph(
    n_layers: int = 18,
    n_pos: int = 64,
    n_features: int = 100_000,
    in_degree: int = 11,
    n_targets: int = 10,
    target_degree: int = 5000,
    seed: int = 0,
) -> Graph:
    """A causal DAG with many nodes and few edges per node, sampled edge by edge (no N x N).

    Each feature draws ``in_degree`` sources: a layer below it (or the embeddings), a position at
    or before its own, then a random feature of that (layer, position), or its error node (10%,
    or when the cell has no features). Targets draw ``target_degree`` sources anywhere. Duplicate
    pairs are dropped; a feature left without outputs gets one edge to a random target.
    """
    generator = torch.Generator().manual_seed(seed)
    n_cells = n_layers * n_pos
    cells = torch.randint(n_cells, (n_features,), generator=generator).sort().values
    features = torch.stack([cells // n_pos, cells % n_pos, torch.arange(n_features)], dim=1)
    counts = torch.bincount(cells, minlength=n_cells)
    starts = torch.cumsum(counts, 0) - counts
    error_offset = n_features
    token_offset = error_offset + n_cells
    target_offset = token_offset + n_pos
    n_nodes = target_offset + n_targets

    def sources_below(row_layer: torch.Tensor, row_pos: torch.Tensor) -> torch.Tensor:
        count = row_layer.numel()
        layer = (torch.rand(count, generator=generator) * (row_layer + 1)).long() - 1  # -1: token
        pos = (torch.rand(count, generator=generator) * (row_pos + 1)).long()
        cell = layer.clamp_min(0) * n_pos + pos
        in_cell = counts[cell]
        pick = starts[cell] + (torch.rand(count, generator=generator) * in_cell).long().clamp_max(
            (in_cell - 1).clamp_min(0)
        )
        use_error = (torch.rand(count, generator=generator) < 0.1) | (in_cell == 0)
        source = torch.where(use_error, error_offset + cell, pick)
        return torch.where(layer < 0, token_offset + pos, source)

    feature_rows = torch.arange(n_features).repeat_interleave(in_degree)
    target_rows = target_offset + torch.arange(n_targets).repeat_interleave(target_degree)
    targets = torch.cat([feature_rows, target_rows])
    sources = torch.cat(
        [
            sources_below(features[feature_rows, 0], features[feature_rows, 1]),
            sources_below(
                torch.full((target_rows.numel(),), n_layers), torch.full((target_rows.numel(),), n_pos - 1)
            ),
        ]
    )
    keys = torch.unique(targets * n_nodes + sources)
    targets, sources = keys // n_nodes, keys % n_nodes
    has_output = torch.zeros(n_nodes, dtype=torch.bool)
    has_output[sources] = True
    lonely = torch.nonzero(~has_output[:n_features]).flatten()
    targets = torch.cat(
        [targets, target_offset + torch.randint(n_targets, (lonely.numel(),), generator=generator)]
    )
    sources = torch.cat([sources, lonely])
    weights = torch.randn(targets.numel(), generator=generator) * torch.exp(
        torch.randn(targets.numel(), generator=generator)
    )
    tokens = torch.randint(50_000, (n_pos,), generator=generator)
    target_ids = torch.randperm(50_000, generator=generator)[:n_targets]
    return Graph(
        prompt=" ".join(f"t{int(t)}" for t in tokens),
        tokens=tokens,
        token_strings=[f" t{int(t)}" for t in tokens],
        n_layers=n_layers,
        features=features,
        activations=torch.rand(n_features, generator=generator) * 5,
        target_labels=[f"tok{int(i)}" for i in target_ids],
        target_token_ids=target_ids,
        target_probabilities=0.9
        * torch.softmax(torch.randn(n_targets, generator=generator), 0).sort(descending=True).values,
        target_vectors=torch.randn(n_targets, 16, generator=generator),
        edge_targets=targets,
        edge_sources=sources,
        edge_weights=weights,
        metadata={"model_id": "bench-model", "scan": "bench-transcoders", "vocab_size": 50_000},
    )


def dense_graph(edges: int) -> Graph:
    """``random_graph`` with 5k features and the density that gives about ``edges`` edges."""
    n_features = 5000
    density = min(1.0, edges / (n_features * n_features / 4))
    return random_graph(16, 24, n_features, 10, density, seed=0)


# ----------------------------------------------------------------------------- run
def run_case(name: str, graph: Graph, repeats: int) -> dict[str, Any]:
    n = graph.n_nodes
    threads = torch.get_num_threads()
    result, prune_s, prune_mib, exact = measured(lambda: prune_graph(graph))
    prune_median_s = median_seconds(lambda: prune_graph(graph), repeats)
    cpu_start = time.process_time()
    prune_graph(graph)
    prune_cpu_s = time.process_time() - cpu_start
    torch.set_num_threads(1)
    try:
        prune_one_thread_s = median_seconds(lambda: prune_graph(graph), repeats)
    finally:
        torch.set_num_threads(threads)
    document, export_s, export_mib, _ = measured(lambda: to_neuronpedia_json(graph, name, prune=result))
    text, dumps_s, _, _ = measured(lambda: dumps(document))
    graph_mib = sum(getattr(graph, f).numel() * getattr(graph, f).element_size() for f in (
        "edge_targets", "edge_sources", "edge_weights")) / MiB  # fmt: skip
    return {
        "case": name,
        "nodes": n,
        "features": graph.n_features,
        "edges": graph.n_edges,
        "edge_list_mib": graph_mib,
        "dense_n2_float32_mib": n * n * 4 / MiB,
        "torch_threads": threads,
        "prune_cold_s": prune_s,
        "prune_median_s": prune_median_s,
        "prune_cpu_s": prune_cpu_s,
        "prune_one_thread_median_s": prune_one_thread_s,
        "prune_peak_mib": prune_mib,
        "prune_peak_bytes_per_edge": prune_mib * MiB / graph.n_edges,
        "prune_peak_over_n2_float32": prune_mib * MiB / (n * n * 4),
        "peak_exact": exact,
        "kept_nodes": int(result.node_mask.sum()),
        "kept_edges": int(result.edge_mask.sum()),
        "to_neuronpedia_json_s": export_s,
        "to_neuronpedia_json_peak_mib": export_mib,
        "dumps_s": dumps_s,
        "json_mib": len(text.encode()) / MiB,
        "prune_within_goal_default_threads": prune_median_s < GOAL_S,
        "prune_within_goal_one_thread": prune_one_thread_s < GOAL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=1_200_000, help="approximate edges of the dense case")
    parser.add_argument("--repeats", type=int, default=3, help="timed prune_graph calls after the cold one")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    rows = []
    for name, build in (("sparse", lambda: sparse_graph()), ("dense", lambda: dense_graph(args.edges))):
        start = time.perf_counter()
        graph = build()
        logger.info("%s graph: %d nodes, %d edges (built in %.1f s)", name, graph.n_nodes, graph.n_edges,
                    time.perf_counter() - start)  # fmt: skip
        if graph.n_edges < 1_000_000:
            logger.warning("%s graph has only %d edges (< 1M)", name, graph.n_edges)
        rows.append(run_case(name, graph, args.repeats))
        del graph
        gc.collect()

    threads = torch.get_num_threads()
    header = (
        f"{'case':7s} {'nodes':>8s} {'edges':>9s} {'N²·4 B':>9s} {f'prune {threads}t':>9s} {'prune 1t':>9s} "
        f"{'cpu':>6s} {'cold':>6s} {'peak':>7s} {'B/edge':>7s} {'kept n/e':>13s} {'export':>7s} {'peak':>7s} "
        f"{'dumps':>6s} {'JSON':>7s}"
    )
    logger.info("\n%s", header)
    for row in rows:
        peak_mark = "" if row["peak_exact"] else "≥"
        logger.info(
            "%-7s %8d %9d %7.1fGB %8.2fs %8.2fs %5.2fs %5.2fs %s%5.0fMB %7.0f %13s %6.2fs %5.0fMB %5.2fs %5.1fMB",
            row["case"], row["nodes"], row["edges"], row["dense_n2_float32_mib"] / 1024,
            row["prune_median_s"], row["prune_one_thread_median_s"], row["prune_cpu_s"], row["prune_cold_s"],
            peak_mark, row["prune_peak_mib"], row["prune_peak_bytes_per_edge"],
            f"{row['kept_nodes']}/{row['kept_edges']}", row["to_neuronpedia_json_s"],
            row["to_neuronpedia_json_peak_mib"], row["dumps_s"], row["json_mib"],
        )  # fmt: skip
    for row in rows:
        verdicts = ["within" if row[key] else "OVER" for key in (
            "prune_within_goal_default_threads", "prune_within_goal_one_thread")]  # fmt: skip
        logger.info(
            "%s: prune_graph %.2f s with %d threads (%s the %.0f s goal), %.2f s with 1 (%s); "
            "peak %.0f MB = %.2g x a dense N x N float32 matrix",
            row["case"], row["prune_median_s"], row["torch_threads"], verdicts[0], GOAL_S,
            row["prune_one_thread_median_s"], verdicts[1], row["prune_peak_mib"],
            row["prune_peak_over_n2_float32"],
        )  # fmt: skip
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "load_average_1m": os.getloadavg()[0],
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "goal_prune_s": GOAL_S,
            "rows": rows,
        }
        temporary = RESULTS.with_name(f".{RESULTS.name}.tmp")
        temporary.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(temporary, RESULTS)
        logger.info("wrote %s", RESULTS)


if __name__ == "__main__":
    main()
