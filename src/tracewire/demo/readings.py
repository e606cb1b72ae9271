"""A written reading of an attribution graph — the groups of features that carry the answer — in
which every claim is tested: each group the graph proposes is ablated in the replacement model and
in the real model, and the reading keeps the groups both confirm (and lists the ones they refute).

A graph is only worth reading if what it says can be tested. The reading here is deliberately
simple, so that a newcomer can follow it and the check can refute it:

1. *Support*: for every feature node, the graph's predicted change of the top target's logit when
   that feature alone is ablated (``evaluation.propagation``: direct and indirect paths through the
   linearised graph); a feature *supports* the answer when ablating it is predicted to lower it.
2. *Candidate groups*: the most supportive features, grouped by where they sit — token position ×
   a fifth of the model's depth ("layers 12-17 at ' France'") — because that is how circuits are
   described (a subject representation, a relation, an output mover); each group is named by its
   features' dashboard labels.
3. *Check*: each candidate is ablated (activations set to 0 at their positions) in the replacement
   model — transcoders in place of the MLPs with their errors held, attention and norms live, later
   features recomputed — and in the real model (real MLPs downstream, the ablation written through
   the decoders). A group is *confirmed* when the target's probability drops in both. The reading
   is the confirmed groups (at most ``max_groups``, lowest real-model probability first); the refuted
   candidates are kept beside it, since a graph claim the model does not bear out is a finding too
   (on SmolLM2, large groups of early-layer features at the last position are predicted to matter
   far more than they do: the real model's later layers compensate, the replacement model's do not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tracewire.evaluation.propagation import predicted_effects
from tracewire.graph.graph import Graph
from tracewire.interventions.api import Intervener
from tracewire.interventions.clean_run import CleanRun
from tracewire.interventions.spec import Intervention

N_BANDS = 5
"""Depth bands of a group: fifths of the model (6 layers each on SmolLM2's 30)."""


@dataclass
class GroupReading:
    """One group of features: where it sits, what its features are, and what ablating it does."""

    name: str
    layers: tuple[int, int]
    position: int
    token: str
    features: list[dict[str, Any]]
    predicted_logit_change: float
    """The graph's predicted change of the target logit when the whole group is ablated (sum of the
    single-feature predictions)."""
    p_clean: float = float("nan")
    p_replacement: float = float("nan")
    p_model: float = float("nan")

    @property
    def confirmed(self) -> bool:
        return self.p_replacement < self.p_clean and self.p_model < self.p_clean

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["confirmed"] = self.confirmed
        return data


@dataclass
class GraphReading:
    """The reading of one graph: its target and the groups, in order of support."""

    prompt: str
    target: str
    target_probability: float
    groups: list[GroupReading] = field(default_factory=list)
    """Before :func:`check_reading`: the candidates; after: the confirmed groups."""
    refuted: list[GroupReading] = field(default_factory=list)
    checked: bool = False

    @property
    def confirmed(self) -> int:
        return sum(group.confirmed for group in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "target": self.target,
            "target_probability": self.target_probability,
            "groups": [group.to_json() for group in self.groups],
            "refuted": [group.to_json() for group in self.refuted],
            "confirmed": self.confirmed,
            "text": self.text(),
        }

    def text(self) -> str:
        """The reading in a few sentences, with both ablation numbers per group."""
        head = f"{self.prompt!r} -> {self.target!r} (p = {self.target_probability:.2f})."
        if not self.groups:
            return f"{head} No group the graph proposes was confirmed by both ablations."
        lines = [f"{head} The answer is carried by:"]
        for i, group in enumerate(self.groups, 1):
            lines.append(f"  {i}. {_describe(group, self.target)}")
        if self.refuted:
            names = "; ".join(
                f"{g.name} (p {g.p_clean:.3f} -> {g.p_replacement:.3f} / {g.p_model:.3f})"
                for g in self.refuted
            )
            lines.append(f"  The graph also proposed, not confirmed by both ablations: {names}")
        return "\n".join(lines)


def _describe(group: GroupReading, target: str) -> str:
    labels = "; ".join(f"{f['label']}" for f in group.features[:3] if f.get("label")) or "unlabelled"
    count = f"{len(group.features)} feature{'s' if len(group.features) != 1 else ''}"
    return (
        f"{group.name} ({count}: {labels}) - ablated, p({target}) {group.p_clean:.3f} -> "
        f"{group.p_replacement:.3f} in the replacement model, {group.p_model:.3f} in the real model"
    )


def read_graph(
    graph: Graph,
    labels: dict[tuple[int, int], str] | None = None,
    *,
    top_features: int = 40,
    max_candidates: int = 10,
) -> GraphReading:
    """Candidate groups of the ``top_features`` most supportive features of the top target (module doc)."""
    labels = labels or {}
    target = graph.target_labels[0] if graph.target_labels else ""
    reading = GraphReading(
        graph.prompt, target, float(graph.target_probabilities[0]) if graph.n_targets else 0.0
    )
    if graph.n_features == 0 or graph.n_targets == 0:
        return reading
    nodes = torch.arange(graph.n_features)
    effects = predicted_effects(graph, nodes, -graph.activations.double()).total_targets[:, 0]
    support = -effects  # > 0: ablating the feature is predicted to lower the target logit
    order = [int(i) for i in torch.argsort(support, descending=True)[:top_features] if float(support[i]) > 0]
    bands = _bands(graph.n_layers)
    grouped: dict[tuple[int, int], list[int]] = {}
    for node in order:
        layer, pos, _ = (int(v) for v in graph.features[node])
        band = next(i for i, (lo, hi) in enumerate(bands) if lo <= layer <= hi)
        grouped.setdefault((band, pos), []).append(node)
    ranked = sorted(grouped.items(), key=lambda item: -sum(float(support[n]) for n in item[1]))[
        :max_candidates
    ]
    for (band, pos), members in ranked:
        token = graph.token_strings[pos]
        lo, hi = bands[band]
        features = []
        for node in members:
            layer, _, feat = (int(v) for v in graph.features[node])
            features.append({
                "node": node, "layer": layer, "feature": feat,
                "activation": round(float(graph.activations[node]), 4),
                "predicted_logit_change": round(float(effects[node]), 4),
                "label": labels.get((layer, feat), ""),
            })  # fmt: skip
        where = "the last token" if pos == graph.n_pos - 1 else f"{token!r} (position {pos})"
        reading.groups.append(GroupReading(
            name=f"layers {lo}-{hi} at {where}", layers=(lo, hi), position=pos, token=token,
            features=features, predicted_logit_change=round(float(effects[members].sum()), 4),
        ))  # fmt: skip
    return reading


@torch.no_grad()
def check_reading(
    reading: GraphReading, graph: Graph, intervener: Intervener, *, max_groups: int = 6
) -> GraphReading:
    """Ablate every candidate in both settings; keep the confirmed ones (see the module docstring)."""
    if not reading.groups:
        return reading
    clean = intervener.clean(graph.tokens, prepend_bos=False)
    target_id = int(graph.target_token_ids[0])
    p_clean = _probability(clean.logits, target_id)
    ablations = [
        [Intervention.ablate(f["layer"], group.position, f["feature"]) for f in group.features]
        for group in reading.groups
    ]
    replacement = _probabilities(
        intervener, clean, ablations, target_id, freeze_attention=False, freeze_norms=False
    )
    model = _probabilities(intervener, clean, ablations, target_id,
                           freeze_attention=False, freeze_norms=False, propagate="model")  # fmt: skip
    for group, p_rep, p_mod in zip(reading.groups, replacement, model, strict=True):
        group.p_clean, group.p_replacement, group.p_model = (
            round(p_clean, 5),
            round(p_rep, 5),
            round(p_mod, 5),
        )
    candidates = reading.groups
    confirmed = sorted((g for g in candidates if g.confirmed), key=lambda g: g.p_model)
    reading.groups = confirmed[:max_groups]
    reading.refuted = [g for g in candidates if not g.confirmed]
    reading.checked = True
    return reading


def _probabilities(
    intervener: Intervener,
    clean: CleanRun,
    ablations: list[list[Intervention]],
    target_id: int,
    **settings: Any,
) -> list[float]:
    """The target's next-token probability after each ablation set (one batched forward)."""
    results = intervener.run_batch(clean, ablations, keep_activations=False, **settings)
    return [_probability(result.logits, target_id) for result in results]


def _probability(logits: torch.Tensor, token_id: int) -> float:
    return float(torch.softmax(logits[-1].double(), dim=-1)[token_id])


def _bands(n_layers: int, n_bands: int = N_BANDS) -> list[tuple[int, int]]:
    """Contiguous, non-empty layer ranges covering ``0 .. n_layers - 1`` (equal shares of the depth)."""
    n_bands = min(n_bands, n_layers)
    edges = [round(i * n_layers / n_bands) for i in range(n_bands + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(n_bands)]
