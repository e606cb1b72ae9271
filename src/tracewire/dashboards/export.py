"""Feature JSON files for external viewers (Anthropic's attribution-graph frontend, Neuronpedia).

The frontend fetches ``{feature_json_base_url}/{node.feature}.json`` for every feature node of a
graph, where ``node.feature`` is the Cantor pairing of (layer, feature id) that
``tracewire.graph.neuronpedia`` writes. :func:`export_feature_json` writes exactly those files;
serve the directory and put its URL in the graph's ``metadata.feature_details.feature_json_base_url``.
Each file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tracewire.atomic import atomic_write_text
from tracewire.dashboards.store import FeatureStore

log = logging.getLogger(__name__)


def export_feature_json(
    store: FeatureStore, out_dir: str | os.PathLike[str], features: Iterable[tuple[int, int]] | None = None
) -> tuple[list[Path], list[tuple[int, int]]]:
    """Write ``{index}.json`` for ``features`` (default: every feature in the store).

    Returns the files written and the requested features that have no card in the store.
    """
    directory = Path(out_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    missing: list[tuple[int, int]] = []
    for layer, feature in sorted(set(features) if features is not None else store.features()):
        card = store.card(layer, feature)
        if card is None:
            missing.append((layer, feature))
            continue
        path = directory / f"{card.index}.json"
        atomic_write_text(path, json.dumps(card.to_json(), ensure_ascii=False, separators=(",", ":")))
        written.append(path)
    if missing:
        log.warning("%d requested features have no card in %s", len(missing), store.path)
    log.info("wrote %d feature files to %s", len(written), directory)
    return written, missing


def graph_features(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """The (layer, feature id) pairs of the feature nodes of saved graphs."""
    from tracewire.graph import Graph

    pairs: set[tuple[int, int]] = set()
    for path in paths:
        graph = Graph.load(path)
        pairs.update((int(layer), int(feature)) for layer, _pos, feature in graph.features.tolist())
    return sorted(pairs)
