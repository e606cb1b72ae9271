"""``FeatureCard``: everything a viewer shows about one feature, and its JSON form.

``FeatureCard.to_json`` gives the feature record that Anthropic's attribution-graph frontend and
Neuronpedia read (circuit-tracer ``frontend/feature_models.py``: ``index``, ``examples_quantiles``,
``top_logits``, ``bottom_logits``, ``act_min``, ``act_max``, ``quantile_values``, ``histogram``,
``activation_frequency``) plus tracewire's own fields (``layer``, ``feature``, labels, counts, the
top examples on their own and the logit values). ``index`` is the Cantor pairing of (layer,
feature): the ``feature`` field of the graph JSON's nodes, which the frontend appends to
``feature_json_base_url`` to fetch ``{index}.json``.

This module (like the store) imports neither torch nor the model: the UI server reads cards
without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOP_GROUP_NAME = "Top activations"


def cantor_pair(layer: int, feature: int) -> int:
    """``(a + b)(a + b + 1)/2 + b``: the same numbering as ``tracewire.graph.neuronpedia_ids.cantor_pair``.

    Repeated here (and checked equal by the tests) so that reading cards never imports torch.
    """
    return (layer + feature) * (layer + feature + 1) // 2 + feature


@dataclass(frozen=True)
class Example:
    """One token window around a token where the feature fired."""

    tokens: list[str]
    token_ids: list[int]
    acts: list[float]
    center: int  # index in ``tokens`` of the token the example was chosen for (``train_token_ind``)
    activation: float  # the feature's activation at ``center``
    position: int  # index of the centre token in the corpus token stream
    is_repeated: bool = False  # the same corpus token already appears in an earlier group

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "tokens_acts_list": self.acts,
            "train_token_ind": self.center,
            "is_repeated_datapoint": self.is_repeated,
            "activation": self.activation,
            "position": self.position,
        }


@dataclass(frozen=True)
class ExampleGroup:
    """Examples whose centre activation lies in ``[lower, upper]``; group 0 holds the top ones."""

    name: str
    lower: float
    upper: float
    examples: list[Example]

    def to_json(self) -> dict[str, Any]:
        return {
            "quantile_name": self.name,
            "lower": self.lower,
            "upper": self.upper,
            "examples": [e.to_json() for e in self.examples],
        }


@dataclass(frozen=True)
class FeatureCard:
    """One feature's dashboard, as read from a :class:`~tracewire.dashboards.FeatureStore`."""

    layer: int
    feature: int
    transcoder_id: str
    activation_count: int
    n_tokens: int
    act_min: float
    act_max: float
    act_sum: float
    histogram: list[int]  # equal-width bins over [act_min, act_max]
    quantile_values: list[float]  # percentiles 1..100 of the firing activations
    top_logits: list[tuple[str, float]]
    bottom_logits: list[tuple[str, float]]
    groups: list[ExampleGroup]  # groups[0]: top activations; then quantile groups, highest first
    auto_label: str
    user_label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """Cantor pairing of (layer, feature): the graph JSON's node ``feature`` field."""
        return cantor_pair(self.layer, self.feature)

    @property
    def label(self) -> str:
        """The user label when set, else the automatic one."""
        return self.user_label if self.user_label else self.auto_label

    @property
    def activation_frequency(self) -> float:
        return self.activation_count / self.n_tokens if self.n_tokens else 0.0

    @property
    def act_mean(self) -> float:
        """Mean activation over the tokens where the feature fired."""
        return self.act_sum / self.activation_count if self.activation_count else 0.0

    @property
    def top_examples(self) -> list[Example]:
        return self.groups[0].examples if self.groups else []

    def to_json(self) -> dict[str, Any]:
        """The Anthropic/Neuronpedia feature record plus tracewire's extra fields."""
        return {
            "transcoder_id": self.transcoder_id,
            "index": self.index,
            "examples_quantiles": [g.to_json() for g in self.groups],
            "top_logits": [token for token, _ in self.top_logits],
            "bottom_logits": [token for token, _ in self.bottom_logits],
            "act_min": self.act_min,
            "act_max": self.act_max,
            "quantile_values": self.quantile_values,
            "histogram": self.histogram,
            "activation_frequency": self.activation_frequency,
            # tracewire extras
            "layer": self.layer,
            "feature": self.feature,
            "label": self.label,
            "auto_label": self.auto_label,
            "user_label": self.user_label,
            "activation_count": self.activation_count,
            "n_tokens": self.n_tokens,
            "act_mean": self.act_mean,
            "top_logit_values": [value for _, value in self.top_logits],
            "bottom_logit_values": [value for _, value in self.bottom_logits],
            "top_examples": [e.to_json() for e in self.top_examples],
        }
