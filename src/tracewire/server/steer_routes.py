"""Steering route: feature interventions on a graph's prompt, top logits and text before/after."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from tracewire.errors import GraphFormatError
from tracewire.server.context import ServerContext, server_context
from tracewire.server.schemas import SteerRequest, SteerResponse
from tracewire.server.steering import SteeringError

router = APIRouter(prefix="/api", tags=["steering"])
Context = Annotated[ServerContext, Depends(server_context)]


@router.post(
    "/steer",
    response_model=SteerResponse,
    summary="Run feature interventions on a graph's prompt",
    responses={
        404: {"description": "No such graph."},
        422: {"description": "Interventions out of range, or the graph does not fit the model."},
        503: {"description": "No model loaded (start with --model and --transcoders)."},
    },
)
async def steer(request: SteerRequest, context: Context) -> dict[str, Any]:
    if context.steerer is None:
        raise HTTPException(
            503, "steering needs a model: start `tracewire serve DIR --model M --transcoders T`"
        )
    loaded = await run_in_threadpool(context.loaded, request.slug)
    try:
        tokens = await run_in_threadpool(loaded.token_ids)
        return await context.steerer.steer(
            tokens,
            request.interventions,
            top_k=request.top_k,
            max_new_tokens=request.max_new_tokens,
            freeze_attention=request.freeze_attention,
        )
    except (SteeringError, GraphFormatError) as exc:
        raise HTTPException(422, f"cannot steer graph {request.slug!r}: {exc}") from None
