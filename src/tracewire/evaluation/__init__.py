"""Faithfulness of attribution graphs: perturbation checks and pruned-subgraph score curves."""

from tracewire.evaluation.budget_curve import BudgetCurve, budget_curve
from tracewire.evaluation.harness import FaithfulnessReport, evaluate_graph
from tracewire.evaluation.propagation import PredictedEffects, predicted_effects

__all__ = [
    "BudgetCurve",
    "FaithfulnessReport",
    "PredictedEffects",
    "budget_curve",
    "evaluate_graph",
    "predicted_effects",
]
