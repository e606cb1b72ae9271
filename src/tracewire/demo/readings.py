"""A written reading of an attribution graph — the groups of features that carry the answer — checked
by ablating each group in the replacement dynamics and in the real model.

A graph is only worth reading if what it says can be tested. The reading here is deliberately
simple, so that a newcomer can follow it and the check can refute it:

1. *Support*: for every feature node, the graph's predicted change of the top target's logit when
   that feature alone is ablated (``evaluation.propagation``: direct and indirect paths through the
   linearised graph); a feature *supports* the answer when ablating it is predicted to lower it.
2. *Groups*: the most supportive features, grouped by where they sit — token position × a third of
   the model's depth ("early / middle / late layers at ' France'") — because that is how circuits
   are described (a subject representation, a relation, an output mover). The 3–6 groups with the
   largest summed support are the reading; each is named by its features' dashboard labels.
3. *Check*: each group is ablated (activations set to 0 at their positions) in two settings:
   replacement dynamics (attention and norms frozen, features recomputed through the transcoders,
   errors held) and the real model (live attention, real MLPs downstream, the ablation written
   through the decoders). The reading holds for a group when the target's probability drops in both.
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

BANDS = ("early", "middle", "late")


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

    @property
    def confirmed(self) -> int:
        return sum(group.confirmed for group in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "target": self.target,
            "target_probability": self.target_probability,
            "groups": [group.to_json() for group in self.groups],
            "confirmed": self.confirmed,
            "text": self.text(),
        }

    def text(self) -> str:
        """The reading in a few sentences, with both ablation numbers per group."""
        lines = [
            f"{self.prompt!r} -> {self.target!r} (p = {self.target_probability:.2f}). "
            "The answer is carried by:"
        ]
        for i, group in enumerate(self.groups, 1):
            labels = "; ".join(f"{f['label']}" for f in group.features[:3] if f.get("label")) or "unlabelled"
            verdict = "confirmed" if group.confirmed else "NOT confirmed"
            lines.append(
                f"  {i}. {group.name} ({len(group.features)} features: {labels}) - ablated, p({self.target}) "
                f"{group.p_clean:.3f} -> {group.p_replacement:.3f} in the replacement dynamics, "
                f"{group.p_model:.3f} in the real model: {verdict}"
            )
        return "\n".join(lines)


def read_graph(
    graph: Graph,
    labels: dict[tuple[int, int], str] | None = None,
    *,
    top_features: int = 30,
    max_groups: int = 6,
) -> GraphReading:
    """Group the ``top_features`` most supportive features of ``graph``'s top target (see module doc)."""
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
    ranked = sorted(grouped.items(), key=lambda item: -sum(float(support[n]) for n in item[1]))[:max_groups]
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
            name=f"{BANDS[band]} layers {lo}-{hi} at {where}", layers=(lo, hi), position=pos, token=token,
            features=features, predicted_logit_change=round(float(effects[members].sum()), 4),
        ))  # fmt: skip
    return reading


@torch.no_grad()
def check_reading(reading: GraphReading, graph: Graph, intervener: Intervener) -> GraphReading:
    """Ablate every group in both settings; fill in its probabilities (see the module docstring)."""
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
        intervener, clean, ablations, target_id, freeze_attention=True, freeze_norms=True
    )
    model = _probabilities(intervener, clean, ablations, target_id,
                           freeze_attention=False, freeze_norms=False, propagate="model")  # fmt: skip
    for group, p_rep, p_mod in zip(reading.groups, replacement, model, strict=True):
        group.p_clean, group.p_replacement, group.p_model = (
            round(p_clean, 5),
            round(p_rep, 5),
            round(p_mod, 5),
        )
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


def _bands(n_layers: int) -> list[tuple[int, int]]:
    """Three contiguous layer ranges covering ``0 .. n_layers - 1`` (thirds of the depth)."""
    edges = [round(i * n_layers / 3) for i in range(4)]
    return [(edges[i], max(edges[i], edges[i + 1] - 1)) for i in range(3)]
