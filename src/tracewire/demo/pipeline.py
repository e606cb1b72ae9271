"""``tracewire demo``: from an empty cache to real attribution graphs in the browser, offline.

Steps (each reuses what an earlier run left in ``$TRACEWIRE_CACHE/demo`` or the output folder):

1. load SmolLM2-135M from its package (converted once to a safetensors cache);
2. load the shipped transcoder set (``--transcoders smollm2-135m``, installed by the README's setup);
   ``--train`` trains the fast default recipe instead, ``--fast`` (CI) a tiny set on built-in text;
3. attribute the showcase prompts and write their graph files at once (the UI can show them);
4. build feature dashboards for the graphs' features from a small corpus slice (two registry
   packages, seconds to fetch; the full training corpus when it is already built), label the nodes;
5. score every graph (replacement / completeness), run the faithfulness harness, and write a
   *reading* of each graph — the groups of features that carry the answer — checked by ablating
   each group in the replacement model and in the real model (``demo.readings``);
6. write ``report.json`` and print a summary; the CLI then serves the UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tracewire.atomic import atomic_write_json
from tracewire.models.cache import cache_root

log = logging.getLogger(__name__)

SHOWCASE: tuple[tuple[str, str], ...] = (
    ("capital-france", "The capital of France is"),  # " Paris", p = 0.81
    ("opposite-hot", "The opposite of hot is"),  # " cold", p = 0.75
    ("eiffel-city", "The Eiffel Tower is located in the city of"),  # " Paris", p = 0.75
    ("counting", "One, two, three, four,"),  # " five", p = 0.73
)
"""Prompts SmolLM2-135M-Instruct answers right with p >= 0.5 (measured; probabilities in fp32)."""

DASHBOARD_SOURCES = ("wiki", "brown")
"""Registry sources of the demo's dashboard slice: small packages (~9 s to fetch), varied prose."""

FAST_TEXT = (
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome. "
    "The capital of Texas is Austin, and Dallas is a large city in Texas. The capital of California is "
    "Sacramento. Michael Jordan plays the sport of basketball. Lionel Messi plays the sport of football. "
    "Serena Williams plays the sport of tennis. The opposite of hot is cold. The opposite of up is down. "
    "The opposite of big is small. The opposite of day is night. Water boils at one hundred degrees. "
    "The old lighthouse stood at the edge of the rocky cliff, where the waves crashed against the stones. "
    "For many years the keeper climbed the narrow stairs to light the lamp and guide the boats home. "
)


@dataclass
class DemoSettings:
    """What the demo does; ``fast()`` is the CI-sized variant."""

    out_dir: Path
    fast: bool = False
    max_feature_nodes: int = 256
    batch_size: int = 64
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    faithfulness_k: int = 10
    dashboard_tokens: int = 40_000
    prompts: tuple[tuple[str, str], ...] = SHOWCASE
    transcoder_dir: Path | None = None
    train: bool = False
    reading_features: int = 40
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fast_settings(cls, out_dir: Path) -> DemoSettings:
        return cls(
            out_dir=out_dir,
            fast=True,
            max_feature_nodes=32,
            batch_size=32,
            faithfulness_k=4,
            dashboard_tokens=2_000,
        )


def demo_cache() -> Path:
    return cache_root() / "demo"


def run_demo(
    settings: DemoSettings, *, progress: bool = True, on_first_graph: Callable[[Path], None] | None = None
) -> dict[str, Any]:
    """Run every step; return (and write to ``out_dir/report.json``) the per-graph scores.

    ``on_first_graph(graphs_dir)`` is called as soon as the first graph's files are written (the
    CLI starts a preview server there, so the first graph is in the browser while the rest runs).
    """
    from tracewire.attribution.engine import attribute
    from tracewire.demo.readings import check_reading, read_graph
    from tracewire.graph.neuronpedia import write_graph_files
    from tracewire.graph.pruning import prune_graph
    from tracewire.graph.scores import graph_scores, subgraph_scores
    from tracewire.interventions.api import Intervener
    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders
    from tracewire.transcoders.presets import EMBEDDED_MODEL
    from tracewire.transcoders.sources import resolve_source

    timings: dict[str, float] = {}
    start = time.perf_counter()
    out = settings.out_dir.expanduser()
    graphs_dir = out / "graphs"
    graphs_dir.mkdir(parents=True, exist_ok=True)

    loaded = load_model("smollm2-135m")
    timings["load_model"] = time.perf_counter() - start

    corpus_dir: Path | None = None
    t = time.perf_counter()
    if settings.transcoder_dir is not None:
        tc_dir = settings.transcoder_dir
    elif settings.fast or settings.train:
        tc_dir = demo_cache() / ("transcoders-fast-ci" if settings.fast else "transcoders-fast")
        if not (tc_dir / "config.yaml").exists():
            corpus_dir = _corpus(loaded, settings)
            _train(loaded, tc_dir, corpus_dir, settings, progress=progress)
    else:
        tc_dir = resolve_source(EMBEDDED_MODEL).directory
    transcoders = load_transcoders(tc_dir, n_layers=loaded.n_layers, d_model=loaded.d_model)
    timings["transcoders"] = time.perf_counter() - t

    t = time.perf_counter()
    pruned_graphs: dict[str, Any] = {}
    graphs = {}
    for slug, prompt in settings.prompts:
        graph = attribute(
            prompt,
            loaded,
            transcoders,
            max_feature_nodes=settings.max_feature_nodes,
            batch_size=settings.batch_size,
            progress=progress,
        )
        graph.metadata.update(
            {"slug": slug, "transcoders": str(tc_dir), "scan": f"tracewire-demo-{tc_dir.name}"}
        )
        graph.save(graphs_dir / f"{slug}.safetensors")
        pruned_graphs[slug] = prune_graph(graph, settings.node_threshold, settings.edge_threshold)
        write_graph_files(
            graph, slug, graphs_dir, prune=pruned_graphs[slug]
        )  # unlabelled until the cards exist
        graphs[slug] = graph
        if "first_graph" not in timings:
            timings["first_graph"] = time.perf_counter() - start
            if on_first_graph is not None:
                on_first_graph(graphs_dir)
    timings["attribution"] = time.perf_counter() - t

    t = time.perf_counter()
    if corpus_dir is None:
        corpus_dir = (
            _corpus(loaded, settings)
            if settings.fast or settings.train
            else _dashboard_corpus(loaded, settings)
        )
    timings["corpus"] = time.perf_counter() - t

    t = time.perf_counter()
    store_path = out / "features.sqlite"
    labels = _dashboards(
        loaded,
        transcoders,
        tc_dir,
        corpus_dir,
        list(graphs.values()),
        store_path,
        settings,
        progress=progress,
    )
    timings["dashboards"] = time.perf_counter() - t

    t = time.perf_counter()
    intervener = Intervener(loaded, transcoders)
    report: dict[str, Any] = {"graphs": {}, "transcoders": str(tc_dir), "settings": _settings_json(settings)}
    for slug, graph in graphs.items():
        pruned = pruned_graphs[slug]
        write_graph_files(graph, slug, graphs_dir, prune=pruned, feature_labels=labels)
        full = graph_scores(graph)
        n_feat = graph.n_features
        kept = pruned.node_mask[:n_feat]
        sub = subgraph_scores(graph, kept)
        faith = _faithfulness(graph, loaded, transcoders, settings, graphs_dir / f"{slug}.faithfulness.json")
        reading = check_reading(
            read_graph(graph, labels, top_features=settings.reading_features), graph, intervener
        )
        report["graphs"][slug] = {
            "prompt": graph.prompt,
            "targets": [
                {"token": label, "p": round(float(p), 4)}
                for label, p in zip(graph.target_labels, graph.target_probabilities.tolist())
            ],
            "features": n_feat,
            "active_features": graph.metadata.get("n_active_features"),
            "edges": graph.n_edges,
            "pruned_features": int(kept.sum()),
            "replacement": full.replacement,
            "completeness": full.completeness,
            "pruned_replacement": sub.replacement,
            "pruned_completeness": sub.completeness,
            "faithfulness": faith,
            "reading": reading.to_json(),
            "attribution_seconds": graph.metadata.get("timings", {}).get("total"),
        }
    timings["scores"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    report["timings"] = timings
    atomic_write_json(out / "report.json", report, default=str)
    return report


def _corpus(loaded: Any, settings: DemoSettings) -> Path:
    """The corpus folder: the model's default one, or (``--fast``) a tiny one from built-in text."""
    from tracewire.corpus import TokenCorpus, build_corpus, local_source
    from tracewire.training.recipes import ensure_corpus

    if not settings.fast:
        return ensure_corpus(loaded).directory
    directory = demo_cache() / "corpus-fast"
    if not (directory / "manifest.json").exists():
        text_dir = demo_cache() / "corpus-fast-text"
        text_dir.mkdir(parents=True, exist_ok=True)
        sentences = [s.strip() + "." for s in FAST_TEXT.split(".") if s.strip()]
        for i in range(0, len(sentences), 2):
            (text_dir / f"doc{i:03d}.txt").write_text(" ".join(sentences[i : i + 2] * 3))
        build_corpus(
            directory,
            tokenizer=loaded.tokenizer,
            bos_token_id=loaded.bos_token_id,
            model_name=loaded.name,
            sources=[local_source(text_dir, name="demo-text", licence="tracewire (Apache-2.0)")],
            fetch=False,
        )
    TokenCorpus(directory)  # validates
    return directory


def _dashboard_corpus(loaded: Any, settings: DemoSettings) -> Path:
    """The full default corpus when it is built; else a slice from ``DASHBOARD_SOURCES`` (built once).

    The dashboards need only ``dashboard_tokens`` of text, so the demo does not wait for the whole
    training corpus (fourteen packages, about a minute and a half to fetch and tokenize).
    """
    from tracewire.corpus import TokenCorpus, build_corpus, default_corpus_dir, select_sources

    full = default_corpus_dir(loaded.name)
    if (full / "manifest.json").exists():
        return full
    directory = demo_cache() / "corpus-dashboards"
    if not (directory / "manifest.json").exists():
        log.info(
            "building the dashboard corpus slice (%s) into %s (one time)",
            ", ".join(DASHBOARD_SOURCES),
            directory,
        )
        build_corpus(directory, tokenizer=loaded.tokenizer, bos_token_id=loaded.bos_token_id,
                     model_name=loaded.name, sources=select_sources(list(DASHBOARD_SOURCES)),
                     tokens=max(200_000, 5 * settings.dashboard_tokens))  # fmt: skip
    TokenCorpus(directory)  # validates
    return directory


def _train(loaded: Any, tc_dir: Path, corpus_dir: Path, settings: DemoSettings, *, progress: bool) -> None:
    from tracewire.training.config import fast_default_config
    from tracewire.training.recipes import FAST_DEFAULT_TIME_LIMIT_S, train_on_corpus

    config = fast_default_config()
    limit: float = FAST_DEFAULT_TIME_LIMIT_S
    if settings.fast:
        config = config.replace(features=64, k=8, tokens=6_000, seq_len=32, batch_windows=8, eval_windows=4,
                                checkpoint_every=10, log_every=2, stats_batches=2)  # fmt: skip
        limit = 90
    log.info(
        "training the %s transcoder set into %s (one time)",
        "CI-sized" if settings.fast else "fast default",
        tc_dir,
    )
    train_on_corpus(
        loaded,
        tc_dir,
        config,
        corpus_dir=corpus_dir,
        progress=progress,
        time_limit_s=limit,
        finish_at_time_limit=True,
    )


def _dashboards(
    loaded: Any,
    transcoders: Any,
    tc_dir: Path,
    corpus_dir: Path,
    graphs: list[Any],
    store_path: Path,
    settings: DemoSettings,
    *,
    progress: bool = True,
) -> dict[tuple[int, int], str]:
    """Build cards for the graphs' features; return their labels (user labels win over auto ones)."""
    from tracewire.corpus import TokenCorpus
    from tracewire.dashboards import DashboardConfig, FeatureSelection, FeatureStore, build_feature_store

    wanted = sorted({(int(layer), int(feat)) for g in graphs for layer, _, feat in g.features.tolist()})
    config = DashboardConfig(seq_len=64) if settings.fast else DashboardConfig()
    build_feature_store(
        loaded,
        transcoders,
        TokenCorpus(corpus_dir),
        store_path,
        tokens=settings.dashboard_tokens,
        selection=FeatureSelection.from_pairs(wanted),
        config=config,
        progress=progress,
    )
    store = FeatureStore(store_path, readonly=True)
    try:
        return dict(store.labels())
    finally:
        store.close()


def _faithfulness(
    graph: Any, loaded: Any, transcoders: Any, settings: DemoSettings, path: Path
) -> dict[str, Any]:
    from tracewire.evaluation.harness import evaluate_graph

    report = evaluate_graph(
        graph,
        loaded,
        transcoders,
        k=settings.faithfulness_k,
        n_random=settings.faithfulness_k,
        progress=False,
    )
    report.save_json(path)
    summary: dict[str, Any] = {}
    for name, groups in report.summary.items():
        others = (v for k, v in groups.items() if k != "compared_with")
        overall: dict[str, Any] = groups.get("all") or next(others, {})
        summary[name] = {
            "correlation": overall.get("correlation"),
            "mean_abs_error": overall.get("mean_abs_error"),
        }
    curve = report.curve.to_json()
    summary["budget_curve_area"] = {
        "replacement": curve.get("replacement_area"),
        "completeness": curve.get("completeness_area"),
    }
    return summary


def _settings_json(settings: DemoSettings) -> dict[str, Any]:
    return {
        "fast": settings.fast,
        "max_feature_nodes": settings.max_feature_nodes,
        "node_threshold": settings.node_threshold,
        "edge_threshold": settings.edge_threshold,
        "faithfulness_k": settings.faithfulness_k,
        "dashboard_tokens": settings.dashboard_tokens,
        "train": settings.train,
        "torch": torch.__version__,
    }
