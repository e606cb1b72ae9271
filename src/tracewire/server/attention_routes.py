"""Attention routes: head loadings of an edge and QK attributions of a head, for the explorer.

- ``GET  /api/graphs/{slug}/attention``: what the graph file's attention section holds;
- ``GET  /api/graphs/{slug}/heads?target=T&source=S``: the edge's split by head (stored, else
  computed when the server has a model);
- ``GET  /api/graphs/{slug}/qk?layer=&head=&query=``: stored QK attributions of that head/query;
- ``POST /api/graphs/{slug}/qk``: compute QK attributions (needs ``--model`` / ``--transcoders``).

Computations run on the steerer's model thread (model calls are not re-entrant). A graph's frozen
model and sources (:class:`~tracewire.attention.TraceContext`) are cached for the last few graphs,
so clicking through heads of one graph costs one replay per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from tracewire.attention import TraceContext, head_loadings, qk_attribution, stored_loadings, stored_qk
from tracewire.attention.store import RULE
from tracewire.errors import TracewireError
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia_ids import node_ids
from tracewire.server.context import ServerContext, server_context
from tracewire.server.graph_files import SLUG_PATTERN

router = APIRouter(prefix="/api/graphs", tags=["attention"])
Context = Annotated[ServerContext, Depends(server_context)]
Slug = Annotated[str, Path(pattern=SLUG_PATTERN, description="A slug from GET /api/graphs.")]
_CONTEXTS_KEPT = 2


class QKRequest(BaseModel):
    layer: int = Field(ge=0, description="Attention layer.")
    head: int = Field(ge=0, description="Query head.")
    query: int = Field(ge=0, description="Query position.")
    keys: list[int] | None = Field(
        default=None, max_length=64, description="Key positions (default: top keys)."
    )
    top_k: int = Field(default=3, ge=1, le=64, description="Without keys: the head's top keys by weight.")
    pairs: int = Field(default=20, ge=0, le=500, description="Top pairs and marginals per side returned.")


class _Contexts:
    """The last few graphs' trace contexts (built on the model thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[str, Any], TraceContext] = OrderedDict()

    def get(self, key: tuple[str, Any], graph: Graph, model: Any, transcoders: Any) -> TraceContext:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        built = TraceContext.build(graph, model, transcoders)
        with self._lock:
            self._kept[key] = built
            while len(self._kept) > _CONTEXTS_KEPT:
                self._kept.popitem(last=False)
        return built


_contexts = _Contexts()


def _node_ids(graph: Graph) -> list[str]:
    """Neuronpedia node ids (what the explorer names nodes by), in graph node order."""
    return node_ids(graph)


def _node(graph: Graph, index: int | None, node_id: str | None, name: str) -> int:
    if (index is None) == (node_id is None):
        raise HTTPException(422, f"give exactly one of {name} (node index) and {name}_id (node_id)")
    if index is not None:
        return index
    try:
        return _node_ids(graph).index(str(node_id))
    except ValueError:
        raise HTTPException(404, f"the graph has no node {node_id!r}") from None


def _with_node_ids(entry: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """Add the explorer's ``node_id`` to every source a QK summary names (``None``: not a node)."""

    def tag(source: dict[str, Any]) -> dict[str, Any]:
        node = int(source.get("node", -1))
        return {**source, "node_id": ids[node] if node >= 0 else None}

    out = dict(entry)
    out["pairs"] = [
        {**p, "query_source": tag(p["query_source"]), "key_source": tag(p["key_source"])}
        for p in entry["pairs"]
    ]
    for side in ("query_marginals", "key_marginals"):
        out[side] = [{**m, "source": tag(m["source"])} for m in entry[side]]
    return out


def _graph(context: ServerContext, slug: str) -> Graph:
    loaded = context.loaded(slug)
    if loaded.kind != "tracewire":
        raise HTTPException(422, f"graph {slug!r} is a JSON export; attention needs the .safetensors graph")
    return loaded.graph()


async def _on_model(context: ServerContext, slug: str, graph: Graph, work: Any) -> Any:
    steerer = context.steerer
    if steerer is None:
        raise HTTPException(
            503, "computing attention needs a model: start `tracewire serve DIR --model M --transcoders T`"
        )
    intervener = steerer.intervener

    def run() -> Any:
        key = (slug, context.loaded(slug).stamp)  # a rewritten file gets a new context
        ctx = _contexts.get(key, graph, intervener.loaded, intervener.transcoders)
        return work(ctx)

    try:
        return await steerer.run_on_model_thread(run)
    except TracewireError as exc:
        raise HTTPException(422, f"graph {slug!r}: {exc}") from None


@router.get("/{slug}/attention", summary="What the graph file's attention section holds")
def attention_summary(slug: Slug, context: Context) -> dict[str, Any]:
    graph = _graph(context, slug)
    loadings = stored_loadings(graph)
    return {
        "rule": RULE,
        "stored_loadings": 0 if loadings is None else int(loadings.targets.numel()),
        "qk": [
            {name: entry[name] for name in ("layer", "head", "kv_head", "query", "key", "score", "pattern")}
            for entry in stored_qk(graph)
        ],
        "can_compute": context.steerer is not None,
    }


@router.get(
    "/{slug}/heads",
    summary="An edge split into its direct part and per-(layer, head) parts",
    responses={404: {"description": "No such graph or edge."}, 503: {"description": "Not stored, no model."}},
)
async def edge_heads(
    slug: Slug,
    context: Context,
    target: Annotated[int | None, Query(ge=0, description="Target node index.")] = None,
    source: Annotated[int | None, Query(ge=0, description="Source node index.")] = None,
    target_id: Annotated[str | None, Query(max_length=200, description="Or: target node_id (JSON).")] = None,
    source_id: Annotated[str | None, Query(max_length=200, description="Or: source node_id (JSON).")] = None,
    top: Annotated[int, Query(ge=1, le=1000, description="Heads returned, largest |part| first.")] = 10,
) -> dict[str, Any]:
    graph = _graph(context, slug)
    target = _node(graph, target, target_id, "target")
    source = _node(graph, source, source_id, "source")
    hits = ((graph.edge_targets == target) & (graph.edge_sources == source)).nonzero()
    if hits.numel() == 0:
        raise HTTPException(404, f"graph {slug!r} has no edge from node {source} to node {target}")
    edge = int(hits[0, 0])
    loadings = stored_loadings(graph)
    stored = loadings is not None and bool(
        ((loadings.targets == target) & (loadings.sources == source)).any()
    )
    if loadings is None or not stored:
        loadings = await _on_model(
            context, slug, graph, lambda ctx: head_loadings(graph, ctx, edges=[edge], progress=False)
        )
    row = loadings.row(target, source)
    ids = _node_ids(graph)
    return {
        "target": target,
        "source": source,
        "target_id": ids[target],
        "source_id": ids[source],
        "rule": RULE,
        "stored": stored,
        "edge": float(graph.edge_weights[edge]),
        "direct": float(loadings.direct[row]),
        "layers": [float(v) for v in loadings.per_layer[row]],
        "heads": loadings.top_heads(row, top),
    }


@router.get("/{slug}/qk", summary="Stored QK attributions of a head at a query")
def stored_qk_route(
    slug: Slug,
    context: Context,
    layer: Annotated[int | None, Query(ge=0)] = None,
    head: Annotated[int | None, Query(ge=0)] = None,
    query: Annotated[int | None, Query(ge=0)] = None,
) -> list[dict[str, Any]]:
    wanted = {"layer": layer, "head": head, "query": query}
    graph = _graph(context, slug)
    ids = _node_ids(graph)
    return [
        _with_node_ids(entry, ids)
        for entry in stored_qk(graph)
        if all(value is None or entry[name] == value for name, value in wanted.items())
    ]


@router.post(
    "/{slug}/qk",
    summary="Compute QK attributions: a head's score split into (query node, key node) pairs",
    responses={
        422: {"description": "Layer, head or positions out of range."},
        503: {"description": "No model."},
    },
)
async def compute_qk(slug: Slug, request: QKRequest, context: Context) -> list[dict[str, Any]]:
    graph = _graph(context, slug)

    def work(ctx: TraceContext) -> list[dict[str, Any]]:
        results = qk_attribution(
            graph,
            ctx,
            layer=request.layer,
            head=request.head,
            query=request.query,
            keys=request.keys,
            top_k=request.top_k,
        )
        ids = _node_ids(graph)
        return [
            _with_node_ids(r.to_json(n_pairs=request.pairs, n_marginals=request.pairs), ids) for r in results
        ]

    result: list[dict[str, Any]] = await _on_model(context, slug, graph, work)
    return result
