"""``aggregate_graphs``: one graph over many prompts, and the circuit they share.

Nodes are merged by (layer, feature id) across prompts AND positions: a feature that fires at
three positions of one prompt is one node, counted once for that prompt. Errors are merged per
layer, all token nodes into one "prompt tokens" node, targets by label. Within a graph, edges
that merge into one (same merged source and target) are summed; across graphs each merged edge
keeps

- ``count``: the number of graphs that have it;
- ``sum`` and ``mean`` (= sum / count) of its per-graph weights;
- ``influence-weighted`` mean: ``Σ_g f_g w_g / Σ_g f_g``, with ``f_g = |Â_e| · (I_t + w_t)`` the
  influence flowing through the edge in graph ``g`` (notation of ``compare.py``), so prompts where
  the edge matters for the targets weigh most.

A feature is *influential* in a graph when :func:`~tracewire.graph.pruning.prune_graph` keeps it
(at any position) at ``node_threshold``; the **common circuit** is the features influential in at
least ``min_fraction`` of the graphs, with the targets and the edges among them that appear in at
least that fraction of graphs.

:meth:`Aggregate.to_graph` writes all this as an ordinary :class:`Graph` (one position; features
at position 0), so ``Graph.save``, pruning, Neuronpedia export and the explorer open it; counts and
the prompts are in ``metadata["aggregate"]``. :meth:`Aggregate.feature_index` is the feature →
graphs index (JSON) for search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.graph.influence import node_influence, normalized_abs_weights
from tracewire.graph.pruning import prune_graph

COMBINE_MODES = ("mean", "sum", "influence-weighted")
_CODE_BITS = 32  # an edge is coded as (target id << 32) | source id over merged node ids
TOKENS_LABEL = "<prompt tokens>"


@dataclass
class Aggregate:
    """Merged nodes and edges of many graphs (module docstring); node order as in :class:`Graph`.

    Merged node space: ``[features (M) | errors (n_layers) | one token node | targets (K)]``.
    """

    names: list[str]
    n_layers: int
    features: torch.Tensor  # int64 [M, 2]: (layer, feature id)
    feature_counts: torch.Tensor  # int64 [M]: graphs where the feature is a node
    influential_counts: torch.Tensor  # int64 [M]: graphs where it is influential
    mean_activation: torch.Tensor  # float64 [M]: over the graphs (and positions) where it is a node
    feature_influence: torch.Tensor  # float64 [M]: influence summed over graphs and positions
    target_labels: list[str]
    target_token_ids: torch.Tensor  # int64 [K]
    target_counts: torch.Tensor  # int64 [K]
    target_probabilities: torch.Tensor  # float64 [K]: mean over the graphs that have the target
    target_vectors: torch.Tensor  # [K, d_model]
    edge_targets: torch.Tensor  # int64 [E], merged node indices
    edge_sources: torch.Tensor
    edge_counts: torch.Tensor  # int64 [E]
    edge_sums: torch.Tensor  # float64 [E]
    edge_influence_weighted: torch.Tensor  # float64 [E]
    occurrences: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)

    # ------------------------------------------------------------------ node space
    @property
    def n_graphs(self) -> int:
        return len(self.names)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def token_index(self) -> int:
        return self.n_features + self.n_layers

    @property
    def target_offset(self) -> int:
        return self.token_index + 1

    def feature_node(self, layer: int, feature: int) -> int:
        """Merged node index of (layer, feature); KeyError if no graph has it."""
        hits = torch.nonzero((self.features[:, 0] == layer) & (self.features[:, 1] == feature)).flatten()
        if not hits.numel():
            raise KeyError(f"feature ({layer}, {feature}) is in none of the {self.n_graphs} graphs")
        return int(hits[0])

    def node_label(self, index: int) -> str:
        """``L3 F17``, ``error L2``, the token node, or ``target 'Paris'``."""
        if index < self.n_features:
            layer, feature = self.features[index].tolist()
            return f"L{layer} F{feature}"
        if index < self.token_index:
            return f"error L{index - self.n_features}"
        if index == self.token_index:
            return TOKENS_LABEL
        return f"target {self.target_labels[index - self.target_offset]!r}"

    def edge_weights(self, combine: str = "mean") -> torch.Tensor:
        """Per merged edge: ``mean`` (over graphs that have it), ``sum`` or ``influence-weighted``."""
        if combine == "mean":
            return self.edge_sums / self.edge_counts.clamp_min(1)
        if combine == "sum":
            return self.edge_sums.clone()
        if combine == "influence-weighted":
            return self.edge_influence_weighted.clone()
        raise InvalidArgumentError(f"combine={combine!r}; expected one of {', '.join(COMBINE_MODES)}")

    # ------------------------------------------------------------------ the common circuit
    def common_features(self, min_fraction: float = 0.5) -> torch.Tensor:
        """Merged indices of features influential in at least ``min_fraction`` of the graphs."""
        _check_fraction(min_fraction)
        return torch.nonzero(self.influential_counts >= min_fraction * self.n_graphs).flatten()

    def common_circuit(self, min_fraction: float = 0.5) -> CommonCircuit:
        """The common features, and edges among them and the targets in ``>= min_fraction`` of graphs."""
        nodes = self.common_features(min_fraction)
        keep = torch.zeros(self.target_offset + len(self.target_labels), dtype=torch.bool)
        keep[nodes] = True
        keep[self.target_offset :] = True
        edges = keep[self.edge_targets] & keep[self.edge_sources]
        edges &= self.edge_counts >= min_fraction * self.n_graphs
        edge_ids = torch.nonzero(edges).flatten()
        return CommonCircuit(
            min_fraction=min_fraction,
            features=[(int(self.features[i, 0]), int(self.features[i, 1])) for i in nodes.tolist()],
            feature_counts=[int(self.influential_counts[i]) for i in nodes.tolist()],
            edges=[
                (self.node_label(int(self.edge_sources[e])), self.node_label(int(self.edge_targets[e])))
                for e in edge_ids.tolist()
            ],
            edge_counts=[int(self.edge_counts[e]) for e in edge_ids.tolist()],
            edge_means=[float(self.edge_weights("mean")[e]) for e in edge_ids.tolist()],
        )

    # ------------------------------------------------------------------ outputs
    def to_graph(
        self,
        *,
        combine: str = "mean",
        min_fraction: float | None = None,
        feature_labels: Mapping[tuple[int, int], str] | None = None,
    ) -> Graph:
        """An ordinary :class:`Graph` of the aggregate (``min_fraction``: only the common circuit).

        ``feature_labels`` (``FeatureStore.labels()``) go into ``metadata["feature_labels"]``.
        """
        weights = self.edge_weights(combine).float()
        keep_feature = torch.ones(self.n_features, dtype=torch.bool)
        keep_edge = torch.ones(weights.shape[0], dtype=torch.bool)
        if min_fraction is not None:
            keep_feature[:] = False
            keep_feature[self.common_features(min_fraction)] = True
            keep_edge = self.edge_counts >= min_fraction * self.n_graphs
        new_index = torch.full((self.target_offset + len(self.target_labels),), -1, dtype=torch.long)
        kept = torch.nonzero(keep_feature).flatten()
        new_index[kept] = torch.arange(kept.numel())
        rest = torch.arange(self.n_features, new_index.numel())
        new_index[rest] = kept.numel() + torch.arange(rest.numel())
        keep_edge &= (new_index[self.edge_targets] >= 0) & (new_index[self.edge_sources] >= 0)
        features = torch.stack(
            [self.features[kept, 0], torch.zeros(kept.numel(), dtype=torch.long), self.features[kept, 1]],
            dim=1,
        )
        counts = self.influential_counts[kept]
        metadata: dict[str, Any] = {
            "aggregate": {
                "graphs": self.names,
                "combine": combine,
                "min_fraction": min_fraction,
                "feature_counts": self.feature_counts[kept].tolist(),
                "influential_counts": counts.tolist(),
                "edge_counts": self.edge_counts[keep_edge].tolist(),
                "target_counts": self.target_counts.tolist(),
            }
        }
        if feature_labels:
            metadata["feature_labels"] = {
                f"{layer}:{feature}": feature_labels[(layer, feature)]
                for layer, feature in self.features[kept].tolist()
                if (layer, feature) in feature_labels
            }
        return Graph(
            prompt=f"aggregate of {self.n_graphs} prompts",
            tokens=torch.tensor([-1], dtype=torch.long),
            token_strings=[TOKENS_LABEL],
            n_layers=self.n_layers,
            features=features,
            activations=self.mean_activation[kept].float(),
            target_labels=list(self.target_labels),
            target_token_ids=self.target_token_ids.clone(),
            target_probabilities=self.target_probabilities.float(),
            target_vectors=self.target_vectors.float(),
            edge_targets=new_index[self.edge_targets[keep_edge]],
            edge_sources=new_index[self.edge_sources[keep_edge]],
            edge_weights=weights[keep_edge],
            metadata=metadata,
        )

    def feature_index(self) -> dict[str, Any]:
        """Feature → graphs, for search: ``{"L:F": [{"graph", "positions", "max_activation", "influence",
        "influential"}, ...]}``."""
        return {
            "graphs": self.names,
            "features": {
                f"{layer}:{feature}": hits for (layer, feature), hits in sorted(self.occurrences.items())
            },
        }


@dataclass(frozen=True)
class CommonCircuit:
    """Features and edges shared by at least ``min_fraction`` of the graphs, with their counts."""

    min_fraction: float
    features: list[tuple[int, int]]
    feature_counts: list[int]
    edges: list[tuple[str, str]]
    edge_counts: list[int]
    edge_means: list[float]

    def to_json(self) -> dict[str, Any]:
        return {
            "min_fraction": self.min_fraction,
            "features": [
                {"layer": layer, "feature": feature, "count": count}
                for (layer, feature), count in zip(self.features, self.feature_counts)
            ],
            "edges": [
                {"source": source, "target": target, "count": count, "mean": mean}
                for (source, target), count, mean in zip(self.edges, self.edge_counts, self.edge_means)
            ],
        }


def _check_fraction(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"min_fraction={value}; expected a fraction in [0, 1]")


def aggregate_graphs(
    graphs: Iterable[Graph],
    *,
    names: Sequence[str] | None = None,
    node_threshold: float = 0.8,
) -> Aggregate:
    """Merge ``graphs`` (module docstring). ``names`` label them in the index (default: their prompts).

    Graphs are read one at a time (pass a generator of ``Graph.load`` calls for many files); all
    must come from one model (same layer count and ``d_model``).
    """
    acc = _Accumulator()
    given = list(names) if names is not None else None
    for i, graph in enumerate(graphs):
        acc.add(graph, given[i] if given is not None else graph.prompt, node_threshold)
    if not acc.names:
        raise InvalidArgumentError("aggregate_graphs needs at least one graph")
    return acc.finish()


class _Accumulator:
    """Running sums keyed by merged node; one graph at a time, so memory is one graph plus the union."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.n_layers: int | None = None
        self.d_model: int | None = None
        self.feature_ids: dict[tuple[int, int], int] = {}
        self.feature_stats: list[list[float]] = []  # count, influential, activation sum, n, influence
        self.targets: dict[str, list[Any]] = {}  # label -> [token id, vector, count, probability sum]
        self.node_ids: dict[tuple[str, Any], int] = {}  # merged node key -> id in edge codes
        self.edge_codes = torch.zeros(0, dtype=torch.long)  # sorted (target id << 32) | source id
        self.edge_stats = torch.zeros(0, 4, dtype=torch.float64)
        self.occurrences: dict[tuple[int, int], list[dict[str, Any]]] = {}

    def add(self, graph: Graph, name: str, node_threshold: float) -> None:
        if self.n_layers is None:
            self.n_layers, self.d_model = graph.n_layers, graph.d_model
        elif (graph.n_layers, graph.d_model) != (self.n_layers, self.d_model):
            raise InvalidArgumentError(
                f"graph {name!r} has {graph.n_layers} layers and d_model {graph.d_model}; "
                f"the graphs before it have {self.n_layers} and {self.d_model} (graphs of one model only)"
            )
        self.names.append(name)
        influence = node_influence(graph).double()
        influential = prune_graph(graph, node_threshold=node_threshold).node_mask[: graph.n_features]
        keys = self._node_keys(graph)
        self._add_features(graph, name, influence, influential)
        for k, label in enumerate(graph.target_labels):
            entry = self.targets.setdefault(
                label, [int(graph.target_token_ids[k]), graph.target_vectors[k].clone(), 0, 0.0]
            )
            entry[2] += 1
            entry[3] += float(graph.target_probabilities[k])
        # Edges: merge within the graph (sum), then fold into the running totals.
        weights_w = torch.zeros(graph.n_nodes, dtype=torch.float64)
        weights_w[graph.target_offset :] = graph.target_probabilities.double()
        output = influence + weights_w
        flow = (
            normalized_abs_weights(graph.edge_targets, graph.edge_weights.double(), graph.n_nodes)
            * output[graph.edge_targets]
        )
        node_ids = torch.tensor([self.node_ids.setdefault(key, len(self.node_ids)) for key in keys])
        codes = (node_ids[graph.edge_targets] << _CODE_BITS) | node_ids[graph.edge_sources]
        unique, inverse = torch.unique(codes, return_inverse=True)
        weight = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(
            0, inverse, graph.edge_weights.double()
        )
        edge_flow = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, flow)
        rows = torch.stack([torch.ones_like(weight), weight, edge_flow * weight, edge_flow], dim=1)
        merged_codes, merged_inverse = torch.unique(torch.cat([self.edge_codes, unique]), return_inverse=True)
        stats = torch.zeros(merged_codes.numel(), 4, dtype=torch.float64)
        stats.index_add_(0, merged_inverse[: self.edge_codes.numel()], self.edge_stats)
        stats.index_add_(0, merged_inverse[self.edge_codes.numel() :], rows)
        self.edge_codes, self.edge_stats = merged_codes, stats  # count, sum, flow*w, flow

    def _node_keys(self, graph: Graph) -> list[tuple[str, Any]]:
        keys: list[tuple[str, Any]] = [
            ("feature", (layer, feature)) for layer, _, feature in graph.features.tolist()
        ]
        keys += [("error", layer) for layer in range(graph.n_layers) for _ in range(graph.n_pos)]
        keys += [("token", 0)] * graph.n_pos
        keys += [("target", label) for label in graph.target_labels]
        return keys

    def _add_features(
        self, graph: Graph, name: str, influence: torch.Tensor, influential: torch.Tensor
    ) -> None:
        per_feature: dict[tuple[int, int], dict[str, Any]] = {}
        for i, (layer, pos, feature) in enumerate(graph.features.tolist()):
            hit = per_feature.setdefault(
                (layer, feature),
                {
                    "graph": name,
                    "positions": [],
                    "max_activation": float("-inf"),
                    "influence": 0.0,
                    "influential": False,
                    "_sum": 0.0,
                },
            )
            activation = float(graph.activations[i])
            hit["positions"].append(pos)
            hit["max_activation"] = max(hit["max_activation"], activation)
            hit["influence"] += float(influence[i])
            hit["influential"] = hit["influential"] or bool(influential[i])
            hit["_sum"] += activation
        for key, hit in per_feature.items():
            index = self.feature_ids.setdefault(key, len(self.feature_ids))
            if index == len(self.feature_stats):
                self.feature_stats.append([0.0, 0.0, 0.0, 0.0, 0.0])
            stats = self.feature_stats[index]
            stats[0] += 1
            stats[1] += hit["influential"]
            stats[2] += hit.pop("_sum")
            stats[3] += len(hit["positions"])
            stats[4] += hit["influence"]
            self.occurrences.setdefault(key, []).append(hit)

    def finish(self) -> Aggregate:
        assert self.n_layers is not None and self.d_model is not None
        order = sorted(self.feature_ids, key=lambda key: key)
        position = {key: i for i, key in enumerate(order)}
        stats = torch.tensor(
            [self.feature_stats[self.feature_ids[key]] for key in order], dtype=torch.float64
        )
        stats = stats.reshape(-1, 5)
        n_features = len(order)
        labels = list(self.targets)
        target_offset = n_features + self.n_layers + 1

        def merged_index(key: tuple[str, Any]) -> int:
            kind, value = key
            if kind == "feature":
                return position[value]
            if kind == "error":
                return n_features + int(value)
            if kind == "token":
                return n_features + self.n_layers  # type: ignore[operator]
            return target_offset + labels.index(value)

        merged_of_id = torch.tensor([merged_index(key) for key in self.node_ids], dtype=torch.long)
        edge_stats = self.edge_stats
        flows = edge_stats[:, 3]
        weighted = torch.where(
            flows > 0,
            edge_stats[:, 2] / flows.clamp_min(1e-300),
            edge_stats[:, 1] / edge_stats[:, 0].clamp_min(1),
        )
        return Aggregate(
            names=self.names,
            n_layers=self.n_layers,
            features=torch.tensor(order, dtype=torch.long).reshape(-1, 2),
            feature_counts=stats[:, 0].long(),
            influential_counts=stats[:, 1].long(),
            mean_activation=stats[:, 2] / stats[:, 3].clamp_min(1),
            feature_influence=stats[:, 4],
            target_labels=labels,
            target_token_ids=torch.tensor([self.targets[label][0] for label in labels], dtype=torch.long),
            target_counts=torch.tensor([self.targets[label][2] for label in labels], dtype=torch.long),
            target_probabilities=torch.tensor(
                [self.targets[label][3] / self.targets[label][2] for label in labels], dtype=torch.float64
            ),
            target_vectors=(
                torch.stack([self.targets[label][1] for label in labels])
                if labels
                else torch.zeros(0, self.d_model)
            ),
            edge_targets=merged_of_id[self.edge_codes >> _CODE_BITS],
            edge_sources=merged_of_id[self.edge_codes & ((1 << _CODE_BITS) - 1)],
            edge_counts=edge_stats[:, 0].long(),
            edge_sums=edge_stats[:, 1],
            edge_influence_weighted=weighted,
            occurrences=self.occurrences,
        )
