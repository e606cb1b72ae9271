"""Replacement and completeness of pruned subgraphs over a sweep of node budgets (MIB-style).

A graph explains a prediction only as well as the part of it a person can read. So, as MIB's
circuit-localisation track integrates faithfulness over circuit sizes, the harness keeps the
``b`` most influential feature nodes for a sweep of budgets ``b``, folds every other feature
into the error node at its (layer, position) (``graph.scores.subgraph_scores``), and reports
the replacement and completeness scores of each subgraph, plus the area under each curve with
the budget as a fraction of all feature nodes (``x ∈ [0, 1]``; 1 is a perfect graph at every
size). ``area_to_one`` is MIB's CMD-like complement, ``1 − area``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tracewire.graph.graph import Graph
from tracewire.graph.influence import node_influence
from tracewire.graph.scores import ScoreContext, finite_or_none


@dataclass(frozen=True)
class BudgetCurve:
    budgets: list[int]
    replacement: list[float]
    completeness: list[float]
    n_features: int

    @property
    def fractions(self) -> list[float]:
        return [b / self.n_features if self.n_features else 1.0 for b in self.budgets]

    def area(self, values: Sequence[float]) -> float | None:
        """Trapezoid area under ``values`` over the budget fractions (None if undefined)."""
        x, y = np.asarray(self.fractions, dtype=float), np.asarray(values, dtype=float)
        if len(x) < 2 or not np.all(np.isfinite(y)):
            return None
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))

    def to_json(self) -> dict[str, Any]:
        replacement_area = self.area(self.replacement)
        completeness_area = self.area(self.completeness)
        return {
            "n_features": self.n_features,
            "budgets": self.budgets,
            "fractions": self.fractions,
            "replacement": [finite_or_none(v) for v in self.replacement],
            "completeness": [finite_or_none(v) for v in self.completeness],
            "replacement_area": replacement_area,
            "completeness_area": completeness_area,
            "replacement_area_to_one": None if replacement_area is None else 1.0 - replacement_area,
            "completeness_area_to_one": None if completeness_area is None else 1.0 - completeness_area,
        }


def default_budgets(n_features: int, n_points: int = 16) -> list[int]:
    """0, then geometrically spaced budgets up to every feature node."""
    if n_features == 0:
        return [0]
    spaced = np.unique(np.round(np.geomspace(1, n_features, num=max(2, n_points))).astype(int))
    return [0, *(int(b) for b in spaced)]


def budget_curve(graph: Graph, budgets: Sequence[int] | None = None) -> BudgetCurve:
    """Scores of the top-``b`` feature subgraphs (by node influence) for each budget ``b``."""
    n_features = graph.n_features
    chosen = sorted({min(max(int(b), 0), n_features) for b in (budgets or default_budgets(n_features))})
    order = torch.argsort(node_influence(graph)[:n_features], descending=True, stable=True)
    context = ScoreContext(graph)
    replacement, completeness = [], []
    for budget in chosen:
        keep = torch.zeros(n_features, dtype=torch.bool)
        keep[order[:budget]] = True
        scores = context.subgraph_scores(keep)
        replacement.append(scores.replacement)
        completeness.append(scores.completeness)
    return BudgetCurve(
        budgets=chosen, replacement=replacement, completeness=completeness, n_features=n_features
    )
