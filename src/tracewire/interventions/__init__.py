"""Interventions: set, scale or add to transcoder features and watch the model (see ``api``)."""

from tracewire.interventions.api import Generation, Intervener, InterventionResult, generate, intervene
from tracewire.interventions.clean_run import CleanRun
from tracewire.interventions.spec import Intervention, parse_intervention

__all__ = [
    "CleanRun",
    "Generation",
    "Intervener",
    "Intervention",
    "InterventionResult",
    "generate",
    "intervene",
    "parse_intervention",
]
