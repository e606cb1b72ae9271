"""The sources of one prompt's local replacement model, and gradients contracted onto them.

Attention explanations are stated over the same sources as the graph: active transcoder features,
one error per (layer, position), one token per position. Unlike a budgeted graph, *every* active
feature is a source here (an unselected feature still moves queries and keys); ``node_ids`` maps
each source to its graph node, or ``-1`` when the graph did not keep it. Everything else that
reaches the residual stream (biases, ``b_dec``, learned positions, the zeroed BOS position's MLP
outputs) is a constant of the frozen model.

Source order: ``[features (layer, pos, feature) | errors (layer-major) | tokens]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tracewire.attribution.components import Components, compute_components
from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.models.loading import LoadedModel
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun, FrozenState


@dataclass
class Sources:
    comps: Components
    transcoders: Any
    node_ids: torch.Tensor  # int64 [n_sources]: graph node index or -1

    @property
    def n_features(self) -> int:
        return self.comps.n_features

    @property
    def error_offset(self) -> int:
        return self.n_features

    @property
    def token_offset(self) -> int:
        return self.n_features + self.comps.n_layers * self.comps.n_pos

    @property
    def size(self) -> int:
        return self.token_offset + self.comps.n_pos

    def describe(self, index: int) -> dict[str, Any]:
        """``{"kind", "layer", "pos", "feature"?, "node"}`` of source ``index`` (JSON-ready)."""
        node = int(self.node_ids[index])
        if index < self.error_offset:
            c = self.comps
            return {
                "kind": "feature",
                "layer": int(c.layer[index]),
                "pos": int(c.pos[index]),
                "feature": int(c.feature[index]),
                "activation": float(c.activation[index]),
                "node": node,
            }
        if index < self.token_offset:
            layer, pos = divmod(index - self.error_offset, self.comps.n_pos)
            return {"kind": "error", "layer": layer, "pos": pos, "node": node}
        return {"kind": "token", "layer": -1, "pos": index - self.token_offset, "node": node}

    def contract(
        self,
        run: FrozenRun,
        outputs: list[torch.Tensor],
        seeds: list[torch.Tensor],
        extra: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``[B, n_sources]``: each copy's ``∂(Σ seeds·outputs)/∂source`` times the source's vector.

        ``run`` is a replay with ``B`` copies; a feature's vector is its activation times its
        decoder rows at its output sites, an error's its error vector, a token's its embedding.
        The gradients at the ``extra`` tensors come back alongside (``None`` where unreached).
        """
        assert run.embeddings is not None
        extra = extra or []
        layers = [layer for layer, t in sorted(run.outputs.items()) if t.requires_grad]
        grads = torch.autograd.grad(
            outputs,
            [run.embeddings, *(run.outputs[layer] for layer in layers), *extra],
            grad_outputs=seeds,
            allow_unused=True,
        )
        batch, length = run.embeddings.shape[:2]
        out = torch.zeros(batch, self.size, device=run.embeddings.device)
        by_layer = {layer: g for layer, g in zip(layers, grads[1 : 1 + len(layers)]) if g is not None}
        if grads[0] is not None:
            tokens = (grads[0].float() * self.comps.token_vectors[:length].float()).sum(-1)
            out[:, self.token_offset : self.token_offset + length] = tokens
        n_pos = self.comps.n_pos
        for layer, grad in by_layer.items():
            errors = (grad.float() * self.comps.errors[layer, :length].float()).sum(-1)
            start = self.error_offset + layer * n_pos
            out[:, start : start + length] = errors
        self._contract_features(out, by_layer, length)
        return out, list(grads[1 + len(layers) :])

    def source_of_node(self, node: int) -> int:
        """The source index of graph node ``node`` (a feature, error or token node)."""
        hits = (self.node_ids == node).nonzero(as_tuple=True)[0]
        if hits.numel() == 0:
            raise InvalidArgumentError(f"graph node {node} is not a source (feature, error or token) node")
        return int(hits[0])

    def _contract_features(self, out: torch.Tensor, grads: dict[int, torch.Tensor], length: int) -> None:
        comps, ts = self.comps, self.transcoders
        for layer in range(comps.n_layers):
            sl = comps.layer_slice(layer, max_pos=length)
            if sl.stop == sl.start:
                continue
            targets = [(j, o) for j, o in enumerate(ts.output_layers(layer)) if o in grads]
            if not targets:
                continue
            dec = ts.decoder_vectors(layer, comps.feature[sl]).float()  # [n, n_out, d]
            dec = dec * comps.activation[sl][:, None, None]
            pos = comps.pos[sl]
            for p in torch.unique(pos).tolist():
                at = (pos == p).nonzero(as_tuple=True)[0]
                total = sum(grads[o][:, p].float() @ dec[at, j].T for j, o in targets)
                assert isinstance(total, torch.Tensor)
                out[:, sl.start + at] = total


def graph_node_ids(graph: Graph, comps: Components) -> torch.Tensor:
    """Graph node index of each source (``-1``: an active feature the graph did not keep)."""
    n_pos = comps.n_pos
    ids = torch.full((comps.n_features + (comps.n_layers + 1) * n_pos,), -1, dtype=torch.long)
    if graph.n_features:
        width = int(comps.feature.max()) + 1 if comps.n_features else 1
        key = ((comps.layer * n_pos + comps.pos) * width + comps.feature).cpu()  # sorted: (layer, pos, feat)
        gkey = (graph.features[:, 0] * n_pos + graph.features[:, 1]) * width + graph.features[:, 2]
        where = torch.searchsorted(key, gkey).clamp(max=max(0, comps.n_features - 1))
        found = key[where] == gkey if comps.n_features else torch.zeros_like(gkey, dtype=torch.bool)
        if not bool(found.all()):
            missing = graph.features[~found][0].tolist()
            raise InvalidArgumentError(
                f"graph feature (layer, pos, feature) = {tuple(missing)} is not active in the model's "
                "clean run: the graph was made with other transcoders or another model"
            )
        ids[where] = torch.arange(graph.n_features)
    tail = torch.arange(graph.error_offset, graph.target_offset)
    ids[comps.n_features :] = tail
    return ids


@dataclass
class TraceContext:
    """One prompt's frozen model and sources, shared by every explanation of its graph."""

    graph: Graph
    rm: ReplacementModel
    state: FrozenState
    sources: Sources

    @staticmethod
    def build(
        graph: Graph, model: ReplacementModel | LoadedModel, transcoders: Any | None = None
    ) -> TraceContext:
        rm = model if isinstance(model, ReplacementModel) else ReplacementModel(model, transcoders)
        if rm.transcoders is None:
            raise InvalidArgumentError(
                "attention explanations need transcoders: pass the graph's transcoders"
            )
        if rm.n_layers != graph.n_layers:
            raise InvalidArgumentError(
                f"graph has {graph.n_layers} layers but the model has {rm.n_layers}: not this model's graph"
            )
        zero = list(graph.metadata.get("zero_positions", []))
        with torch.no_grad():
            run = rm.record(graph.tokens)
        comps = compute_components(rm.transcoders, run, zero)
        sources = Sources(comps=comps, transcoders=rm.transcoders, node_ids=graph_node_ids(graph, comps))
        return TraceContext(graph=graph, rm=rm, state=run.state, sources=sources)
