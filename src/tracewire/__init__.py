"""tracewire: circuit tracing for language models.

Public API (imported lazily so that ``import tracewire`` and ``tracewire --help`` stay fast;
torch and transformers load on first use):

- ``load_model``: a Hugging Face causal LM (hub id, local folder, ``.gguf`` file or the
  embedded alias ``smollm2-135m``) wrapped with its architecture adapter.
- ``load_transcoders`` / ``save_transcoders``: per-layer, skip and cross-layer transcoders in the
  circuit-tracer layout (and GemmaScope ``params.npz``).
- ``ReplacementModel``: model + transcoders; records a clean forward and makes the backward pass
  linear (frozen attention patterns and norm scales, MLPs seen through their transcoders).
- ``attribute`` / ``Graph``: the attribution graph of one prompt.
- ``intervene`` / ``generate`` / ``Intervention``: set, scale or add to features and watch the model.
- ``evaluate_graph``: a graph's faithfulness (predicted vs actual ablation effects, budget curves).
"""

from __future__ import annotations

import importlib
from typing import Any

from tracewire._version import __version__

_LAZY: dict[str, str] = {
    "load_model": "tracewire.models.loading",
    "LoadedModel": "tracewire.models.loading",
    "Adapter": "tracewire.models.adapters",
    "adapter_for": "tracewire.models.adapters",
    "load_transcoders": "tracewire.transcoders.io",
    "save_transcoders": "tracewire.transcoders.io",
    "TranscoderSet": "tracewire.transcoders.base",
    "PerLayerTranscoders": "tracewire.transcoders.per_layer",
    "CrossLayerTranscoder": "tracewire.transcoders.cross_layer",
    "ReplacementModel": "tracewire.replacement.model",
    "FrozenState": "tracewire.replacement.model",
    "attribute": "tracewire.attribution.engine",
    "Graph": "tracewire.graph.graph",
    "intervene": "tracewire.interventions.api",
    "generate": "tracewire.interventions.api",
    "Intervention": "tracewire.interventions.spec",
    "Intervener": "tracewire.interventions.api",
    "evaluate_graph": "tracewire.evaluation.harness",
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
