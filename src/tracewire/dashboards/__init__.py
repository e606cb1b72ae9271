"""Feature dashboards: what each transcoder feature responds to and what it promotes.

- ``build_feature_store``: one batched pass over a corpus sample computes, for many features at
  once, activation counts and frequency, min/max, a histogram and percentiles, top-activating
  examples, examples per activation quantile, top/bottom logits and an automatic label
  (``build.py``; resumable, splittable by layer and feature ranges);
- ``FeatureStore``: the SQLite file those cards live in (schema in ``schema.py`` and
  ``docs/feature-store.md``), read by the UI server and ``tracewire feature``; user labels
  override automatic ones and flow into graph JSON via ``store.labels()``;
- ``FeatureCard.to_json``: the Anthropic/Neuronpedia feature record; ``export_feature_json``
  writes one ``{index}.json`` per feature for ``feature_json_base_url``;
- ``render_card``: a card for the terminal, activating tokens highlighted.

Reading cards (``FeatureStore``, ``FeatureCard``, ``render_card``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracewire.dashboards.card import Example, ExampleGroup, FeatureCard
from tracewire.dashboards.store import FeatureStore, FeatureStoreError
from tracewire.dashboards.terminal import render_card

if TYPE_CHECKING:  # heavy (torch) names are imported on first use, see __getattr__
    from tracewire.dashboards.build import BuildReport, build_feature_store
    from tracewire.dashboards.config import DashboardConfig
    from tracewire.dashboards.export import export_feature_json
    from tracewire.dashboards.selection import FeatureSelection

__all__ = [
    "BuildReport",
    "DashboardConfig",
    "Example",
    "ExampleGroup",
    "FeatureCard",
    "FeatureSelection",
    "FeatureStore",
    "FeatureStoreError",
    "build_feature_store",
    "export_feature_json",
    "render_card",
]

_LAZY = {
    "BuildReport": "tracewire.dashboards.build",
    "build_feature_store": "tracewire.dashboards.build",
    "DashboardConfig": "tracewire.dashboards.config",
    "export_feature_json": "tracewire.dashboards.export",
    "FeatureSelection": "tracewire.dashboards.selection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tracewire.dashboards' has no attribute {name!r}")
