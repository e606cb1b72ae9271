"""``evaluate_graph``: the faithfulness numbers tracewire reports for every graph.

1. Perturbation faithfulness: for the ``k`` most influential feature nodes and ``n_random``
   random other ones, the graph's predicted change of every target under an ablation versus the
   actual change in the model in four settings (``perturbation.SETTINGS``); correlation and
   mean absolute error per setting and group.
2. Pruned-subgraph replacement and completeness over node budgets, with areas
   (``budget_curve``), and the scores of the whole graph.

The report is plain JSON (``FaithfulnessReport.to_json``) and a PNG (``plot.save_plot``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.evaluation.budget_curve import BudgetCurve, budget_curve
from tracewire.evaluation.perturbation import (
    SETTINGS,
    AblationRecord,
    check_graph_matches,
    run_ablations,
    summarize,
)
from tracewire.graph.graph import Graph
from tracewire.graph.influence import node_influence
from tracewire.graph.scores import finite_or_none, graph_scores
from tracewire.interventions.api import Intervener
from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import TranscoderSet


@dataclass
class FaithfulnessReport:
    """Everything ``tracewire evaluate`` writes (see the module docstring)."""

    prompt: str
    target_labels: list[str]
    n_features: int
    fraction: float
    ablations: list[AblationRecord]
    summary: dict[str, Any]
    curve: BudgetCurve
    graph_scores: dict[str, float | None]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "tracewire-faithfulness",
            "prompt": self.prompt,
            "target_labels": self.target_labels,
            "n_features": self.n_features,
            "ablated_fraction": self.fraction,
            "settings": {name: {**kw, "compared_with": which} for name, (kw, which) in SETTINGS.items()},
            "summary": self.summary,
            "graph_scores": self.graph_scores,
            "budget_curve": self.curve.to_json(),
            "ablations": [record.to_json() for record in self.ablations],
            "metadata": self.metadata,
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False))
        return out


def choose_features(
    graph: Graph, influence: torch.Tensor, k: int, n_random: int, seed: int
) -> tuple[list[int], list[str]]:
    """Top-``k`` feature nodes by influence, then ``n_random`` others drawn with ``seed``."""
    n_features = graph.n_features
    if k < 0 or n_random < 0:
        raise InvalidArgumentError(f"k and n_random must be >= 0, got k={k}, n_random={n_random}")
    order = torch.argsort(influence[:n_features], descending=True, stable=True)
    top = order[: min(k, n_features)].tolist()
    rest = order[len(top) :]
    generator = torch.Generator().manual_seed(seed)
    pick = rest[torch.randperm(rest.numel(), generator=generator)[: min(n_random, rest.numel())]]
    others = sorted(pick.tolist())
    return [*top, *others], ["top"] * len(top) + ["random"] * len(others)


def evaluate_graph(
    graph: Graph,
    model: Intervener | LoadedModel,
    transcoders: TranscoderSet | None = None,
    *,
    k: int = 20,
    n_random: int = 20,
    fraction: float = 1.0,
    seed: int = 0,
    budgets: Sequence[int] | None = None,
    settings: Sequence[str] = tuple(SETTINGS),
    batch_size: int = 16,
    progress: bool = True,
) -> FaithfulnessReport:
    """Faithfulness report of ``graph`` (made by ``attribute`` with this model and transcoders).

    ``fraction``: how much of each activation to ablate (1 = all of it). ``settings``: a subset
    of ``perturbation.SETTINGS`` to run. ``batch_size``: ablations per forward pass.
    """
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise InvalidArgumentError(f"unknown settings {unknown}; expected some of {', '.join(SETTINGS)}")
    if not 0 < fraction <= 1:
        raise InvalidArgumentError(f"fraction must be in (0, 1], got {fraction}")
    start = time.perf_counter()
    engine = model if isinstance(model, Intervener) else Intervener(model, transcoders)
    clean = engine.clean(graph.tokens, prepend_bos=False)
    check_graph_matches(graph, clean)
    influence = node_influence(graph)
    nodes, groups = choose_features(graph, influence, k, n_random, seed)
    records = run_ablations(
        graph,
        engine,
        clean,
        nodes,
        groups,
        influence,
        fraction=fraction,
        settings=settings,
        batch_size=batch_size,
        progress=progress,
    )
    scores = graph_scores(graph)
    return FaithfulnessReport(
        prompt=graph.prompt,
        target_labels=list(graph.target_labels),
        n_features=graph.n_features,
        fraction=fraction,
        ablations=records,
        summary=summarize(records, settings),
        curve=budget_curve(graph, budgets),
        graph_scores={
            "replacement": finite_or_none(scores.replacement),
            "completeness": finite_or_none(scores.completeness),
        },
        metadata={"seed": seed, "k": k, "n_random": n_random, "seconds": time.perf_counter() - start},
    )
