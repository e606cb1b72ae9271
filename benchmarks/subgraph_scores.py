"""Timing of subgraph scores (and the other sparse graph operations) on a ~100k-edge graph.

Run: ``python benchmarks/subgraph_scores.py [--edges 100000] [--subset 1000] [--repeats 20]``.
The target from the design: one ``subgraph_scores`` call for a 1k-node subset of a 100k-edge
graph in < 200 ms, with a ``ScoreContext`` built once per graph.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.graph.factory import random_graph

from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import to_neuronpedia_json
from tracewire.graph.pruning import prune_graph
from tracewire.graph.scores import ScoreContext, graph_scores

logger = logging.getLogger("benchmark")
BUDGET_MS = 200.0


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time in ms over ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=100_000, help="approximate edge count")
    parser.add_argument("--subset", type=int, default=1000, help="features in the subset")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    n_layers, n_pos, n_features = 16, 24, 6000
    allowed_pairs_per_feature = n_features / 4  # rough: half the layers below, half the positions before
    density = min(1.0, args.edges / (n_features * allowed_pairs_per_feature))
    graph = random_graph(n_layers, n_pos, n_features, 10, density, seed=0)
    logger.info("graph: %d nodes, %d edges, %d features", graph.n_nodes, graph.n_edges, graph.n_features)

    context_ms, context = timed(lambda: ScoreContext(graph), args.repeats)
    subset = torch.randperm(graph.n_features, generator=torch.Generator().manual_seed(1))[: args.subset]
    subgraph_ms, scores = timed(lambda: context.subgraph_scores(subset), args.repeats)
    fresh_ms, _ = timed(lambda: ScoreContext(graph).subgraph_scores(subset), args.repeats)
    full_ms, full = timed(lambda: graph_scores(graph), args.repeats)
    prune_ms, result = timed(lambda: prune_graph(graph), max(3, args.repeats // 4))
    export_ms, _ = timed(lambda: to_neuronpedia_json(graph, "bench", prune=result), 3)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "graph.safetensors"
        save_ms, _ = timed(lambda: graph.save(path), 3)
        load_ms, _ = timed(lambda: Graph.load(path), 3)

    logger.info("ScoreContext(graph)                 %8.2f ms", context_ms)
    logger.info(
        "subgraph_scores, %d features (cached) %6.2f ms  (%.1f%% of the %.0f ms budget)",
        args.subset,
        subgraph_ms,
        100 * subgraph_ms / BUDGET_MS,
        BUDGET_MS,
    )
    logger.info("subgraph_scores incl. new context   %8.2f ms", fresh_ms)
    logger.info("graph_scores                        %8.2f ms", full_ms)
    logger.info("prune_graph                         %8.2f ms", prune_ms)
    logger.info("to_neuronpedia_json (pruned)        %8.2f ms", export_ms)
    logger.info("save / load                         %8.2f / %.2f ms", save_ms, load_ms)
    logger.info("full scores %s; subset scores %s", full, scores)
    logger.info(
        "kept after pruning: %d nodes, %d edges", int(result.node_mask.sum()), int(result.edge_mask.sum())
    )
    if subgraph_ms > BUDGET_MS:
        logger.warning("subgraph_scores is OVER the %.0f ms budget", BUDGET_MS)


if __name__ == "__main__":
    main()
