"""``compare_graphs(a, b)``: what differs between the attribution graphs of two prompts.

Nodes are aligned by a key: features by (layer, position, feature id), errors by (layer,
position), tokens by position, targets by label. Positions align one to one when both prompts
have the same number of tokens (a contrast pair such as "Dallas" / "Houston"); otherwise they are
counted from the end (position -1 is the last token, where the targets are read), which aligns
the part of two prompts that matters most for the next token.

Differences are *primary* changes — a feature or target present in one graph only, a feature
whose activation changed, an edge gained, lost or re-weighted — ranked by how much of the
targets' influence they move:

- an edge ``t ← s`` carries the influence flow ``f = (w / R_t) · O_t``: its weight over the sum of
  |weights| into ``t`` (the normalised adjacency ``Â`` of ``influence.py``, with its sign) times
  ``O_t = I_t + w_t``, the influence of ``t`` on the targets plus ``t``'s own target weight. An
  edge's score is ``|f_a − f_b|`` (absent = 0);
- a feature gained or lost scores its influence ``I`` where it is present; a feature in both
  graphs whose activation changed scores ``|Δact| / max|act| · max(I_a, I_b)``;
- a target gained or lost scores its probability.

Every node's influence and activation in both graphs (``nodes``) are there too, for secondary
effects (an edge lost upstream lowers the influence of everything above it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tracewire.graph.graph import Graph
from tracewire.graph.influence import node_influence, normalized_abs_weights

NodeKey = tuple[Any, ...]


@dataclass(frozen=True)
class Difference:
    """One primary difference, with the score it is ranked by."""

    kind: str  # feature gained|feature lost|activation changed|edge gained|edge lost|edge changed|target ...
    score: float
    node: NodeKey | None = None
    source: NodeKey | None = None
    target: NodeKey | None = None
    value_a: float | None = None
    value_b: float | None = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "score": self.score,
            "node": list(self.node) if self.node else None,
            "source": list(self.source) if self.source else None,
            "target": list(self.target) if self.target else None,
            "a": self.value_a,
            "b": self.value_b,
            "description": self.description,
        }


@dataclass(frozen=True)
class NodeDelta:
    """One aligned node: presence, activation (features) and influence in each graph."""

    key: NodeKey
    in_a: bool
    in_b: bool
    activation_a: float
    activation_b: float
    influence_a: float
    influence_b: float

    @property
    def influence_delta(self) -> float:
        return self.influence_b - self.influence_a


@dataclass
class GraphComparison:
    """The result of :func:`compare_graphs`; ``ranked`` is sorted by score, largest first."""

    alignment: str  # "position" or "end"
    ranked: list[Difference]
    nodes: list[NodeDelta]
    edges_gained: int
    edges_lost: int
    edges_changed: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        ranked = self.ranked if limit is None else self.ranked[:limit]
        return {
            "alignment": self.alignment,
            "edges_gained": self.edges_gained,
            "edges_lost": self.edges_lost,
            "edges_changed": self.edges_changed,
            **self.info,
            "ranked": [d.to_json() for d in ranked],
        }


def node_keys(graph: Graph, *, from_end: bool) -> list[NodeKey]:
    """The alignment key of every node, in node order (see the module docstring)."""
    shift = graph.n_pos if from_end else 0
    keys: list[NodeKey] = [
        ("feature", layer, pos - shift, feature) for layer, pos, feature in graph.features.tolist()
    ]
    keys += [("error", layer, pos - shift) for layer in range(graph.n_layers) for pos in range(graph.n_pos)]
    keys += [("token", pos - shift) for pos in range(graph.n_pos)]
    keys += [("target", label) for label in graph.target_labels]
    return keys


def describe_key(key: NodeKey, graph: Graph | None = None) -> str:
    """``L3 F17 @-1``, ``error L2 @4``, ``token 'Paris' @3``, ``target 'Paris'``."""
    kind = key[0]
    if kind == "feature":
        return f"L{key[1]} F{key[3]} @{key[2]}"
    if kind == "error":
        return f"error L{key[1]} @{key[2]}"
    if kind == "token":
        text = ""
        if graph is not None:
            pos = key[1] + graph.n_pos if key[1] < 0 else key[1]
            if 0 <= pos < graph.n_pos:
                text = f" {graph.token_strings[pos]!r}"
        return f"token{text} @{key[1]}"
    return f"target {key[1]!r}"


class _Side:
    """Per-graph arrays over the union of aligned nodes (absent nodes: zero)."""

    def __init__(self, graph: Graph, keys: list[NodeKey], ids: dict[NodeKey, int]) -> None:
        n = len(ids)
        self.graph = graph
        self.node_ids = torch.tensor([ids[key] for key in keys], dtype=torch.long)
        self.present = torch.zeros(n, dtype=torch.bool)
        self.present[self.node_ids] = True
        influence = node_influence(graph).double()
        self.influence = torch.zeros(n, dtype=torch.float64)
        self.influence[self.node_ids] = influence
        weights = torch.zeros(graph.n_nodes, dtype=torch.float64)
        weights[graph.target_offset :] = graph.target_probabilities.double()
        self.output = torch.zeros(n, dtype=torch.float64)  # O = I + w
        self.output[self.node_ids] = influence + weights
        self.activation = torch.zeros(n, dtype=torch.float64)
        self.activation[self.node_ids[: graph.n_features]] = graph.activations.double()
        self.probability = torch.zeros(n, dtype=torch.float64)
        self.probability[self.node_ids[graph.target_offset :]] = graph.target_probabilities.double()
        targets, sources = self.node_ids[graph.edge_targets], self.node_ids[graph.edge_sources]
        self.edge_codes = targets * n + sources
        normalized = normalized_abs_weights(graph.edge_targets, graph.edge_weights.double(), graph.n_nodes)
        self.edge_weights = graph.edge_weights.double()
        self.edge_flow = normalized * torch.sign(self.edge_weights) * self.output[targets]


def compare_graphs(a: Graph, b: Graph, *, rtol: float = 1e-6, limit: int | None = None) -> GraphComparison:
    """Align ``a`` and ``b`` and rank their differences (module docstring); ``limit`` cuts ``ranked``.

    An edge present in both counts as changed when its weights differ by more than ``rtol`` of the
    larger; identical graphs give an empty ``ranked`` list.
    """
    from_end = a.n_pos != b.n_pos
    keys_a, keys_b = node_keys(a, from_end=from_end), node_keys(b, from_end=from_end)
    ids: dict[NodeKey, int] = {}
    for key in keys_a + keys_b:
        ids.setdefault(key, len(ids))
    union = list(ids)
    side_a, side_b = _Side(a, keys_a, ids), _Side(b, keys_b, ids)
    ranked = _node_differences(union, side_a, side_b)
    edge_ranked, counts = _edge_differences(union, side_a, side_b, rtol)
    ranked += edge_ranked
    ranked.sort(key=lambda d: -d.score)
    nodes = [
        NodeDelta(
            key=key,
            in_a=bool(side_a.present[i]),
            in_b=bool(side_b.present[i]),
            activation_a=float(side_a.activation[i]),
            activation_b=float(side_b.activation[i]),
            influence_a=float(side_a.influence[i]),
            influence_b=float(side_b.influence[i]),
        )
        for i, key in enumerate(union)
    ]
    nodes.sort(key=lambda d: -abs(d.influence_delta))
    return GraphComparison(
        alignment="end" if from_end else "position",
        ranked=ranked if limit is None else ranked[:limit],
        nodes=nodes,
        edges_gained=counts["edge gained"],
        edges_lost=counts["edge lost"],
        edges_changed=counts["edge changed"],
        info={"prompt_a": a.prompt, "prompt_b": b.prompt},
    )


def _node_differences(union: list[NodeKey], a: _Side, b: _Side) -> list[Difference]:
    out: list[Difference] = []
    for i, key in enumerate(union):
        in_a, in_b = bool(a.present[i]), bool(b.present[i])
        if key[0] == "feature":
            if in_a != in_b:
                out.append(
                    _presence(
                        key,
                        "feature",
                        in_a,
                        (a if in_a else b).influence[i],
                        a.activation[i],
                        b.activation[i],
                    )
                )
            elif float(a.activation[i]) != float(b.activation[i]):
                act_a, act_b = float(a.activation[i]), float(b.activation[i])
                scale = max(abs(act_a), abs(act_b))
                share = abs(act_a - act_b) / scale if scale > 0 else 0.0
                score = share * max(float(a.influence[i]), float(b.influence[i]))
                out.append(
                    Difference(
                        "activation changed",
                        score,
                        node=key,
                        value_a=act_a,
                        value_b=act_b,
                        description=f"{describe_key(key)}: {act_a:.4g} -> {act_b:.4g}",
                    )
                )
        elif key[0] == "target" and in_a != in_b:
            side = a if in_a else b
            out.append(
                _presence(key, "target", in_a, side.probability[i], a.probability[i], b.probability[i])
            )
    return out


def _presence(
    key: NodeKey, what: str, in_a: bool, score: torch.Tensor, value_a: torch.Tensor, value_b: torch.Tensor
) -> Difference:
    """A node (feature or target) in one graph only: scored by ``score`` where it is present."""
    return Difference(
        f"{what} lost" if in_a else f"{what} gained",
        float(score),
        node=key,
        value_a=float(value_a) if in_a else None,
        value_b=None if in_a else float(value_b),
        description=describe_key(key),
    )


def _edge_differences(
    union: list[NodeKey], a: _Side, b: _Side, rtol: float
) -> tuple[list[Difference], dict[str, int]]:
    codes = torch.cat([a.edge_codes, b.edge_codes])
    unique, inverse = torch.unique(codes, return_inverse=True)
    m, n_a = int(unique.shape[0]), int(a.edge_codes.shape[0])

    def scatter(values: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m, dtype=torch.float64).index_add_(0, part, values)

    inv_a, inv_b = inverse[:n_a], inverse[n_a:]
    has_a = torch.zeros(m, dtype=torch.bool).index_fill_(0, inv_a, True)
    has_b = torch.zeros(m, dtype=torch.bool).index_fill_(0, inv_b, True)
    weight_a, weight_b = scatter(a.edge_weights, inv_a), scatter(b.edge_weights, inv_b)
    flow_a, flow_b = scatter(a.edge_flow, inv_a), scatter(b.edge_flow, inv_b)
    larger = torch.maximum(weight_a.abs(), weight_b.abs())
    changed = has_a & has_b & ((weight_a - weight_b).abs() > rtol * larger)
    kinds = {"edge gained": has_b & ~has_a, "edge lost": has_a & ~has_b, "edge changed": changed}
    score = (flow_a - flow_b).abs()
    n = len(union)
    out: list[Difference] = []
    for kind, mask in kinds.items():
        for e in torch.nonzero(mask).flatten().tolist():
            code = int(unique[e])
            target, source = union[code // n], union[code % n]
            out.append(
                Difference(
                    kind,
                    float(score[e]),
                    source=source,
                    target=target,
                    value_a=float(weight_a[e]) if bool(has_a[e]) else None,
                    value_b=float(weight_b[e]) if bool(has_b[e]) else None,
                    description=f"{describe_key(source)} -> {describe_key(target)}",
                )
            )
    return out, {kind: int(mask.sum()) for kind, mask in kinds.items()}
