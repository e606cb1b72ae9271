"""Head loadings: each graph edge split into a direct part and per-(layer, head) parts.

An edge ``A[t, s]`` is the linear effect of source ``s`` on target ``t`` in the frozen model. It is
a sum over paths; a path may pass through attention heads (value/output paths: patterns are
frozen) at several layers. **Rule: a path is credited to the *last* head it crosses** — the head
whose output the target finally reads — and paths crossing no head form the *direct* part.
The parts then partition the paths, so they sum to the edge exactly, and per-layer totals are
the sums over a layer's heads.

Why the last head: it is the head that moved the information *to the target's position* (the
question a user clicking an edge asks), and it is what a clean intervention measures. With the
attention outputs of every layer above ``l`` held at their clean values (no path may cross a later
head), removing head ``(l, h)``'s output changes the edge by exactly that head's part.

Computation (two backward passes per target, every source at once):

1. *no-attention sensitivity*: replay with every head output detached into a leaf; the gradient of
   the target's read-out at the sources is the direct part, and at the leaf of layer ``l`` it is
   ``g_l``, the sensitivity of the target to layer ``l``'s head outputs through the residual
   stream and MLP skips only;
2. *parts*: one replay copy per (layer, head); copy ``(l, h)`` seeds head ``h``'s slice of layer
   ``l``'s output with ``g_l`` and backpropagates through the full frozen model (paths into the
   head may cross earlier heads) to every source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from tracewire.attention.access import capture_attention, head_geometry
from tracewire.attention.sources import TraceContext
from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.models.loading import LoadedModel
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun

log = logging.getLogger(__name__)

#: Replay copies per backward pass of step 2 (layers × heads are cut into chunks of this size).
MAX_COPIES = 256
#: Names of the graph-file section tensors (see docs/graph-format.md).
SECTION_TARGETS, SECTION_SOURCES, SECTION_DIRECT, SECTION_HEADS = (
    "attention.loadings.targets",
    "attention.loadings.sources",
    "attention.loadings.direct",
    "attention.loadings.heads",
)


@dataclass
class TargetLoadings:
    """Every source's effect on one target, split: ``direct [n_sources]``, ``heads [L, H, n_sources]``."""

    direct: torch.Tensor
    heads: torch.Tensor


@dataclass
class HeadLoadings:
    """Loadings of a set of graph edges, each named by its ``(target, source)`` node pair."""

    targets: torch.Tensor  # int64 [M] graph node ids
    sources: torch.Tensor  # int64 [M]
    direct: torch.Tensor  # float32 [M]
    heads: torch.Tensor  # float32 [M, n_layers, n_heads]

    @property
    def per_layer(self) -> torch.Tensor:
        """``[M, n_layers]``: each layer's heads summed."""
        return self.heads.sum(-1)

    @property
    def total(self) -> torch.Tensor:
        """``[M]``: direct + every head = the edge."""
        return self.direct + self.heads.sum((1, 2))

    def row(self, target: int, source: int) -> int:
        """The row of the edge ``source → target``."""
        hits = ((self.targets == target) & (self.sources == source)).nonzero(as_tuple=True)[0]
        if hits.numel() == 0:
            raise InvalidArgumentError(f"edge {source} -> {target} has no head loadings")
        return int(hits[0])

    def top_heads(self, row: int, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` largest |head parts| of row ``row``: ``{"layer", "head", "value"}``."""
        heads = self.heads[row]
        flat = heads.flatten()
        order = torch.argsort(flat.abs(), descending=True)[:n]
        n_heads = heads.shape[1]
        return [
            {"layer": int(i) // n_heads, "head": int(i) % n_heads, "value": float(flat[i])} for i in order
        ]

    def sections(self) -> dict[str, torch.Tensor]:
        """The tensors stored in the graph file's optional attention section."""
        return {
            SECTION_TARGETS: self.targets,
            SECTION_SOURCES: self.sources,
            SECTION_DIRECT: self.direct,
            SECTION_HEADS: self.heads,
        }

    @staticmethod
    def from_sections(sections: dict[str, torch.Tensor]) -> HeadLoadings | None:
        if SECTION_TARGETS not in sections:
            return None
        return HeadLoadings(
            sections[SECTION_TARGETS],
            sections[SECTION_SOURCES],
            sections[SECTION_DIRECT],
            sections[SECTION_HEADS],
        )


def head_loadings(
    graph: Graph,
    model: ReplacementModel | LoadedModel | TraceContext,
    transcoders: Any | None = None,
    *,
    edges: Sequence[int] | torch.Tensor | None = None,
    max_copies: int = MAX_COPIES,
    progress: bool = True,
) -> HeadLoadings:
    """Split graph edges (``edges``: indices into its edge arrays; ``None``: every edge) by head.

    ``model``: the graph's model and transcoders (a :class:`ReplacementModel`, or a
    :class:`LoadedModel` plus ``transcoders``), or a :class:`TraceContext` built for ``graph``.
    Costs two backward passes per distinct target (the second over layers × heads copies).
    """
    ctx = model if isinstance(model, TraceContext) else TraceContext.build(graph, model, transcoders)
    chosen = torch.arange(graph.n_edges) if edges is None else torch.as_tensor(edges, dtype=torch.long)
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= graph.n_edges):
        raise InvalidArgumentError(f"edge indices must lie in 0..{graph.n_edges - 1}")
    geometry = head_geometry(ctx.rm)
    n_layers = graph.n_layers
    direct = torch.zeros(chosen.numel())
    heads = torch.zeros(chosen.numel(), n_layers, geometry.n_heads)
    node_to_source = torch.full((graph.target_offset,), -1, dtype=torch.long)
    valid = ctx.sources.node_ids >= 0
    node_to_source[ctx.sources.node_ids[valid]] = valid.nonzero(as_tuple=True)[0]
    targets = graph.edge_targets[chosen]
    unique = torch.unique(targets)
    for target in tqdm(unique.tolist(), desc="head loadings", unit="target", disable=not progress):
        rows = (targets == target).nonzero(as_tuple=True)[0]
        cols = node_to_source[graph.edge_sources[chosen[rows]]]
        split = target_loadings(ctx, int(target), max_copies=max_copies)
        direct[rows] = split.direct[cols]
        heads[rows] = split.heads[:, :, cols].permute(2, 0, 1)
    return HeadLoadings(targets=targets, sources=graph.edge_sources[chosen], direct=direct, heads=heads)


def target_loadings(ctx: TraceContext, target: int, *, max_copies: int = MAX_COPIES) -> TargetLoadings:
    """Every source's effect on graph node ``target`` (a feature or target node), split by head."""
    graph, rm = ctx.graph, ctx.rm
    read_layer, length, vector = _read_out(ctx, target)
    top = min(read_layer, rm.n_layers - 1)  # attention layers below the read: 0..top
    layers = list(range(top + 1))
    geometry = head_geometry(rm)
    n_heads, dh = geometry.n_heads, geometry.head_dim
    n_sources = ctx.sources.size

    # 1. direct part and the no-attention sensitivity g_l at every layer's head outputs
    with torch.enable_grad(), capture_attention(rm, layers, detach_heads=True) as cap:
        run = rm.replay(ctx.state, length=length, batch=1, stop_after_layer=read_layer)
        read = _read(run, read_layer, length, vector, graph.n_layers)
        leaves = [cap.head_outputs[layer] for layer in layers]
        direct, sensitivities = ctx.sources.contract(run, [read], [torch.ones_like(read)], extra=leaves)
    del run, cap

    # 2. one copy per (layer, head): seed the head's slice with g_l, backpropagate through everything
    heads = torch.zeros(graph.n_layers, n_heads, n_sources)
    per_chunk = max(1, max_copies // n_heads)
    for start in range(0, len(layers), per_chunk):
        chunk = layers[start : start + per_chunk]
        todo = [(i, layer) for i, layer in enumerate(chunk) if sensitivities[start + i] is not None]
        if not todo:
            continue
        with torch.enable_grad(), capture_attention(rm, chunk) as cap:
            run = rm.replay(ctx.state, length=length, batch=len(chunk) * n_heads, stop_after_layer=chunk[-1])
            outputs, seeds = [], []
            for i, layer in todo:
                sensitivity = sensitivities[start + i]
                assert sensitivity is not None
                z = cap.head_outputs[layer]
                seed = torch.zeros_like(z)
                for h in range(n_heads):
                    cols = slice(h * dh, (h + 1) * dh)
                    seed[i * n_heads + h, :, cols] = sensitivity[0, :, cols]
                outputs.append(z)
                seeds.append(seed)
            values, _ = ctx.sources.contract(run, outputs, seeds)
        heads[chunk[0] : chunk[-1] + 1] = values.view(len(chunk), n_heads, n_sources).cpu()
    return TargetLoadings(direct=direct[0].cpu(), heads=heads)


def _read_out(ctx: TraceContext, target: int) -> tuple[int, int, torch.Tensor]:
    """``(layer, replay length, read-out vector)`` of a graph target; layer ``n_layers`` = final norm."""
    graph = ctx.graph
    if 0 <= target < graph.n_features:
        layer, pos, feature = graph.features[target].tolist()
        ts = ctx.rm.transcoders
        assert ts is not None
        return layer, pos + 1, ts.encoder_vectors(layer, torch.tensor([feature]))[0]
    if graph.target_offset <= target < graph.n_nodes:
        return graph.n_layers, graph.n_pos, graph.target_vectors[target - graph.target_offset]
    raise InvalidArgumentError(
        f"node {target} is an error or token node; only features and targets have incoming edges"
    )


def _read(run: FrozenRun, layer: int, length: int, vector: torch.Tensor, n_layers: int) -> torch.Tensor:
    """The target's linear read-out ``[B]``: ``W_enc · x`` at its site, or ``v · final_resid[-1]``."""
    site = run.final_resid if layer >= n_layers else run.transcoder_inputs[layer]
    assert site is not None
    return site[:, length - 1].float() @ vector.float().to(site.device)
