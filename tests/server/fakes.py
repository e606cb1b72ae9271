"""Stand-ins for ``tracewire.dashboards.FeatureStore`` (same methods) and a demo graph directory."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import torch

from tests.graph.factory import random_graph
from tracewire.graph import Graph, keep_all, write_graph_files

#: The demo graph fits the tiny test model (3 layers, vocabulary 96, 24 features per layer); its
#: token ids are the tiny word-level tokenizer's (tests/factories/models.py WORDS).
DEMO_WORDS = ["<|endoftext|>", "The", " capital", " of", " Texas", " is"]
DEMO_TOKENS = [0, 2, 3, 4, 8, 6]
DEMO_TARGETS = {9: " Austin", 7: " Paris", 5: " France", 2: " The"}


def demo_graph(seed: int = 0) -> Graph:
    graph = random_graph(
        n_layers=3, n_pos=6, n_features=40, n_targets=4, seed=seed, d_model=16, vocab_size=96
    )
    return dataclasses.replace(
        graph,
        prompt="The capital of Texas is",
        tokens=torch.tensor(DEMO_TOKENS),
        token_strings=list(DEMO_WORDS),
        target_token_ids=torch.tensor(list(DEMO_TARGETS)),
        target_labels=list(DEMO_TARGETS.values()),
        metadata={**graph.metadata, "scan": "tiny-plt"},
    )


class FakeCard:
    def __init__(self, layer: int, feature: int, label: str | None) -> None:
        self.layer, self.feature, self.label = layer, feature, label

    def to_json(self) -> dict[str, Any]:
        tokens = ["The", " capital", " of", " Texas", " is", " Austin"]
        acts = [0.0, 0.1, 0.0, 2.5, 0.4, 1.0]
        example = {
            "tokens": tokens,
            "tokens_acts_list": acts,
            "train_token_ind": 3,
            "is_repeated_datapoint": False,
        }
        return {
            "index": self.layer * 1000 + self.feature,
            "layer": self.layer,
            "feature": self.feature,
            "label": self.label or f"auto L{self.layer}F{self.feature}",
            "auto_label": f"auto L{self.layer}F{self.feature}",
            "user_label": self.label,
            "examples_quantiles": [
                {"quantile_name": "Top activations", "examples": [example]},
                {"quantile_name": "Subsample interval 1", "examples": [example]},
            ],
            "top_examples": [example],
            "top_logits": [" Austin", " Houston"],
            "bottom_logits": [" Paris", " London"],
            "act_min": 0.0,
            "act_max": 2.5,
            "quantile_values": [0.5, 1.0, 2.0],
            "histogram": [50, 20, 8, 3, 1],
            "activation_frequency": 0.0123,
            "activation_count": 82,
        }


class FakeFeatureStore:
    """Cards for every feature; labels in a dict. Checks it is used from one thread, like SQLite."""

    def __init__(self) -> None:
        self.user_labels: dict[tuple[int, int], str] = {}
        self.thread: int | None = None

    def _same_thread(self) -> None:
        ident = threading.get_ident()
        if self.thread is None:
            self.thread = ident
        assert self.thread == ident, "FeatureStore used from two threads"

    def card(self, layer: int, feature: int) -> FakeCard | None:
        self._same_thread()
        if feature >= 500:
            return None
        return FakeCard(layer, feature, self.user_labels.get((layer, feature)))

    def set_label(self, layer: int, feature: int, text: str | None) -> None:
        self._same_thread()
        if text is None:
            self.user_labels.pop((layer, feature), None)
        else:
            self.user_labels[(layer, feature)] = text

    def labels(self) -> dict[tuple[int, int], str]:
        self._same_thread()
        return dict(self.user_labels)


def write_demo_directory(root: Path) -> dict[str, Path]:
    """demo.safetensors, small.json, packed.json.gz, broken.json (+ a secret file outside ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"demo": demo_graph().save(root / "demo.safetensors")}
    other = demo_graph(seed=1)
    paths["small"] = write_graph_files(other, "small", root, prune=keep_all(other))
    paths["packed"] = write_graph_files(other, "packed", root, gzip=True, node_threshold=0.9)
    broken = root / "broken.json"
    broken.write_text('{"metadata": {"slug": "broken"}, "nodes": [')
    paths["broken"] = broken
    secret = root.parent / "secret.json"
    secret.write_text('{"secret": "outside the served directory"}')
    paths["secret"] = secret
    (root / "escape.json").symlink_to(secret)
    return paths
