"""Graph routes: list, download, nodes, paged links, subgraph scores, saving ``qParams``.

The UI reads a graph in two steps, ``/nodes`` then ``/links`` pages, so that the links of a big
graph travel as compact index columns in bounded pages. ``GET /api/graphs/{slug}`` streams the
same graph as a complete Neuronpedia document, for download and for other viewers.

Route functions are plain ``def``: FastAPI runs them in its thread pool, so pruning a large graph
does not stall other requests.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse

from tracewire.errors import GraphFormatError
from tracewire.server.context import ServerContext, server_context
from tracewire.server.graph_files import SLUG_PATTERN, GraphFile
from tracewire.server.graph_store import DEFAULT_EDGE_THRESHOLD, DEFAULT_NODE_THRESHOLD, UnknownNodesError
from tracewire.server.graph_summary import summarize
from tracewire.server.graph_view import GraphView, dumps_json
from tracewire.server.kept_nodes import parse_keep
from tracewire.server.schemas import (
    GraphList,
    GraphSummary,
    SaveQParamsRequest,
    SaveQParamsResponse,
    SubgraphScoresRequest,
    SubgraphScoresResponse,
)

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/graphs", tags=["graphs"])

Context = Annotated[ServerContext, Depends(server_context)]
Slug = Annotated[str, Path(pattern=SLUG_PATTERN, description="A slug from GET /api/graphs.")]
NodeThreshold = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        description=(
            "Keep nodes up to this cumulative influence. tracewire graphs are pruned with "
            f"prune_graph (default {DEFAULT_NODE_THRESHOLD}); JSON graphs are filtered on their "
            "stored influence (default: all nodes)."
        ),
    ),
]
EdgeThreshold = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        description=f"tracewire graphs only: edge pruning threshold (default {DEFAULT_EDGE_THRESHOLD}).",
    ),
]
Keep = Annotated[
    str | None,
    Query(
        max_length=16_000,  # uvicorn's (h11's) limit on a request line with its headers
        description=(
            "Comma-separated node ids shown whatever the thresholds (pinned nodes), with their links "
            "to shown nodes; ids the graph lacks are ignored (compare with the returned nodes)."
        ),
    ),
]
_JSON: dict[str, Any] = {"application/json": {}}
MAX_LINKS_PAGE = 1_000_000


@router.get("", response_model=GraphList, summary="List the graphs in the served directory")
def list_graphs(context: Context) -> GraphList:
    return GraphList(graphs=[GraphSummary(**summarize(file)) for file in context.directory.list()])


@router.get(
    "/{slug}",
    summary="The graph as a Neuronpedia graph JSON document (streamed)",
    response_class=StreamingResponse,
    responses={
        200: {"content": _JSON, "description": "metadata, qParams, nodes, links (the Neuronpedia schema)."}
    },
)
def graph_document(
    slug: Slug,
    context: Context,
    node_threshold: NodeThreshold = None,
    edge_threshold: EdgeThreshold = None,
    keep: Keep = None,
) -> StreamingResponse:
    file = context.file(slug)
    headers = {"Content-Disposition": f'attachment; filename="{slug}.json"'}
    labels = _labels(context)
    if file.kind == "neuronpedia" and node_threshold is None and not labels:
        _check_readable(context, slug)
        return StreamingResponse(_file_chunks(file), media_type="application/json", headers=headers)
    view = _view(context, slug, node_threshold, edge_threshold, keep)
    return StreamingResponse(view.iter_document(labels), media_type="application/json", headers=headers)


@router.get(
    "/{slug}/nodes",
    summary="Metadata, saved qParams and the nodes to show",
    responses={
        200: {
            "content": _JSON,
            "description": (
                "{slug, kind, metadata, qParams, settings, n_links, nodes}: nodes are Neuronpedia node "
                "objects (feature labels from the feature store in 'clerp'); fetch links from /links."
            ),
        }
    },
)
def graph_nodes(
    slug: Slug,
    context: Context,
    node_threshold: NodeThreshold = None,
    edge_threshold: EdgeThreshold = None,
    keep: Keep = None,
) -> Response:
    loaded = context.loaded(slug)
    view = _view(context, slug, node_threshold, edge_threshold, keep)
    body = {
        "slug": slug,
        "kind": loaded.kind,
        "metadata": view.metadata,
        "qParams": view.q_params,
        "settings": view.settings,
        "n_links": view.n_links,
    }
    text = dumps_json(body)[:-1] + ',"nodes":' + dumps_json(view.labelled_nodes(_labels(context))) + "}"
    return Response(text, media_type="application/json")


@router.get(
    "/{slug}/links",
    summary="One page of links as index columns",
    responses={
        200: {
            "content": _JSON,
            "description": (
                "{offset, total, source[], target[], weight[]}: source/target are positions in the "
                "/nodes list of the same thresholds; weight is the signed direct effect."
            ),
        }
    },
)
def graph_links(
    slug: Slug,
    context: Context,
    offset: Annotated[int, Query(ge=0, le=10**10)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LINKS_PAGE)] = 250_000,
    node_threshold: NodeThreshold = None,
    edge_threshold: EdgeThreshold = None,
    keep: Keep = None,
    format: Annotated[
        Literal["json", "binary"],
        Query(
            description=(
                "binary: the page as little-endian int32 sources, int32 targets and float32 weights "
                "(n links = body length / 12), with the offset and the total in the X-Links-Offset and "
                "X-Links-Total headers; what the explorer reads."
            )
        ),
    ] = "json",
) -> Response:
    view = _view(context, slug, node_threshold, edge_threshold, keep)
    if format == "binary":
        headers = {"X-Links-Offset": str(offset), "X-Links-Total": str(view.n_links)}
        return Response(
            view.links_binary(offset, limit), media_type="application/octet-stream", headers=headers
        )
    return Response(view.links_json(offset, limit), media_type="application/json")


@router.post(
    "/{slug}/subgraph-scores",
    response_model=SubgraphScoresResponse,
    summary="Replacement and completeness of a pinned subgraph",
    responses={404: {"description": "No such graph."}, 422: {"description": "Unknown node ids."}},
)
def subgraph_scores(slug: Slug, request: SubgraphScoresRequest, context: Context) -> dict[str, Any]:
    loaded = context.loaded(slug)
    try:
        return loaded.subgraph_scores(request.pinnedIds)
    except UnknownNodesError as exc:
        raise HTTPException(422, f"graph {slug!r}: {exc}") from None
    except GraphFormatError as exc:
        raise HTTPException(422, f"graph {slug!r} cannot be scored: {exc}") from None


@router.post(
    "/{slug}/qparams",
    response_model=SaveQParamsResponse,
    summary="Save pins, supernodes and labels into the graph file's qParams (atomic)",
    responses={403: {"description": "The server is read-only."}},
)
def save_q_params(slug: Slug, request: SaveQParamsRequest, context: Context) -> dict[str, Any]:
    if context.read_only:
        raise HTTPException(403, "this server is read-only (started with --read-only): nothing is saved")
    file = context.file(slug)
    try:
        stored = context.graphs.save_q_params(file, request.qParams.model_dump(mode="json"))
    except FileNotFoundError:
        raise HTTPException(404, f"graph {slug!r} was removed from the served directory") from None
    except GraphFormatError as exc:
        raise HTTPException(422, f"graph {slug!r} cannot be updated: {exc}") from None
    logger.info("saved qParams of %s", file.path.name)
    return {"slug": slug, "file": file.path.name, "qParams": stored}


def _view(
    context: ServerContext,
    slug: str,
    node_threshold: float | None,
    edge_threshold: float | None,
    keep: str | None = None,
) -> GraphView:
    loaded = context.loaded(slug)
    try:
        return loaded.view(node_threshold, edge_threshold, parse_keep(keep))
    except GraphFormatError as exc:
        raise HTTPException(422, f"graph {slug!r} cannot be shown: {exc}") from None


def _check_readable(context: ServerContext, slug: str) -> None:
    context.loaded(slug)  # parses (and caches) the file: a broken one is a 422, not a broken stream


def _labels(context: ServerContext) -> dict[tuple[int, int], str]:
    return context.features.labels() if context.features is not None else {}


def _file_chunks(file: GraphFile, chunk: int = 1 << 20) -> Iterator[bytes]:
    opener = gzip.open if file.path.name.endswith(".gz") else open
    with opener(file.path, "rb") as stream:
        while block := stream.read(chunk):
            yield block
