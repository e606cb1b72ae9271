"""Feature routes: a feature's card (examples, histogram, logits) and its user label."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from tracewire.errors import TracewireError
from tracewire.server.context import ServerContext, server_context
from tracewire.server.feature_service import FeatureService, FeatureStoreUnavailable
from tracewire.server.schemas import FeatureLabelRequest, FeatureLabelResponse

router = APIRouter(prefix="/api/features", tags=["features"])

Context = Annotated[ServerContext, Depends(server_context)]
Layer = Annotated[int, Path(ge=0, le=10_000, description="Transcoder layer of the feature.")]
Feature = Annotated[int, Path(ge=0, le=100_000_000, description="Feature index within its layer.")]


@router.get(
    "/{layer}/{feature}",
    summary="The feature's card",
    responses={
        200: {
            "description": (
                "FeatureCard.to_json(): examples_quantiles, top_examples, top_logits, bottom_logits, "
                "histogram, activation_frequency, act_min/act_max, label, auto_label, user_label, ..."
            )
        },
        404: {"description": "No feature store, or no card for this feature."},
        503: {"description": "The feature store cannot be opened."},
    },
)
async def feature_card(layer: Layer, feature: Feature, context: Context) -> dict[str, Any]:
    service = _service(context)
    try:
        card = await service.card(layer, feature)
    except (FeatureStoreUnavailable, TracewireError) as exc:
        raise HTTPException(503, str(exc)) from None
    if card is None:
        raise HTTPException(404, f"the feature store has no card for layer {layer} feature {feature}")
    return card


@router.put(
    "/{layer}/{feature}/label",
    response_model=FeatureLabelResponse,
    summary="Set or clear the feature's user label",
    responses={403: {"description": "Labels are read-only."}, 503: {"description": "Store unavailable."}},
)
async def set_feature_label(
    layer: Layer, feature: Feature, request: FeatureLabelRequest, context: Context
) -> FeatureLabelResponse:
    service = _service(context)
    if not service.writable or context.read_only:
        raise HTTPException(403, "feature labels are read-only on this server")
    text = (request.label or "").strip() or None
    try:
        await service.set_label(layer, feature, text)
    except (FeatureStoreUnavailable, TracewireError) as exc:
        raise HTTPException(503, str(exc)) from None
    return FeatureLabelResponse(layer=layer, feature=feature, label=text)


def _service(context: ServerContext) -> FeatureService:
    if context.features is None:
        raise HTTPException(404, "no feature store: start the server with --features FILE")
    return context.features
