"""tracewire: circuit tracing for language models.

Public API (imported lazily so that ``import tracewire`` and ``tracewire --help`` stay fast;
torch and transformers load on first use). The main path, prompt → graph → JSON:

- ``load_model``: a Hugging Face causal LM (hub id, local folder, ``.gguf`` file or the
  embedded alias ``smollm2-135m``), as a :class:`LoadedModel`.
- ``load_transcoders`` / ``save_transcoders``: per-layer, skip and cross-layer transcoders
  (:class:`TranscoderSet`: :class:`PerLayerTranscoders`, :class:`CrossLayerTranscoder`) in the
  circuit-tracer layout (and GemmaScope ``params.npz``).
- ``ReplacementModel``: model + transcoders, linear for one prompt (frozen attention patterns and
  norm scales, MLPs seen through their transcoders).
- ``attribute`` → :class:`Graph`: the attribution graph of one prompt; targets are salient logits,
  tokens, or ``CustomTarget`` / ``LogitDifference`` directions. ``estimate_attribution`` predicts
  a run's peak memory and time.
- ``prune_graph``, ``graph_scores``, ``write_graph_files``: prune by influence, replacement /
  completeness scores, Neuronpedia JSON on disk (more in :mod:`tracewire.graph`).
- ``intervene`` / ``generate`` / ``Intervention`` / ``Intervener``: set, scale or add to
  features and watch the model.
- ``evaluate_graph``: a graph's faithfulness (predicted vs actual ablation effects, budget curves).
- ``head_loadings`` / ``qk_attribution``: which attention heads carry an edge, and why a head
  attends where it does (pairs of query-side and key-side nodes).
- ``compare_graphs`` / ``aggregate_graphs``: many prompts — two graphs' differences, the circuit
  they share.
- ``show``: the explorer inline in a Jupyter notebook.

Internals (adapters, frozen state, row batches) live in their subpackages and are not part of
this list.
"""

from __future__ import annotations

import importlib
from typing import Any

from tracewire._version import __version__

_LAZY: dict[str, str] = {
    "load_model": "tracewire.models.loading",
    "LoadedModel": "tracewire.models.loading",
    "load_transcoders": "tracewire.transcoders.io",
    "save_transcoders": "tracewire.transcoders.io",
    "TranscoderSet": "tracewire.transcoders.base",
    "PerLayerTranscoders": "tracewire.transcoders.per_layer",
    "CrossLayerTranscoder": "tracewire.transcoders.cross_layer",
    "ReplacementModel": "tracewire.replacement.model",
    "attribute": "tracewire.attribution.engine",
    "CustomTarget": "tracewire.attribution.targets",
    "LogitDifference": "tracewire.attribution.targets",
    "estimate_attribution": "tracewire.attribution.estimate",
    "Graph": "tracewire.graph.graph",
    "prune_graph": "tracewire.graph.pruning",
    "graph_scores": "tracewire.graph.scores",
    "write_graph_files": "tracewire.graph.neuronpedia",
    "intervene": "tracewire.interventions.api",
    "generate": "tracewire.interventions.api",
    "Intervention": "tracewire.interventions.spec",
    "Intervener": "tracewire.interventions.api",
    "evaluate_graph": "tracewire.evaluation.harness",
    "compare_graphs": "tracewire.graph.compare",
    "aggregate_graphs": "tracewire.graph.aggregate",
    "head_loadings": "tracewire.attention",
    "qk_attribution": "tracewire.attention",
    "show": "tracewire.notebook",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracewire' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
