"""``GET /api/search``: features by label, id or token across the served graphs and feature store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from tracewire.server.context import ServerContext, server_context
from tracewire.server.search import MAX_RESULTS, SearchIndex, search

router = APIRouter(prefix="/api", tags=["search"])
Context = Annotated[ServerContext, Depends(server_context)]
_INDEX = SearchIndex()


@router.get("/search", summary="Find features across every graph of the directory and the feature store")
def search_features(
    context: Context,
    q: Annotated[str, Query(min_length=1, max_length=200, description="A label, a feature id, or a token.")],
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 30,
) -> dict[str, Any]:
    """One row per feature: ``{layer, feature, label, match, graphs}``; ``graphs`` lists each graph
    where the feature survives the default pruning with its most influential node there."""
    return search(context, _INDEX, q, limit)
