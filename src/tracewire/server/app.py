"""The FastAPI application of the graph explorer: :func:`create_app` wires routes and guards.

Request flow: :class:`~tracewire.server.request_guard.RequestGuard` (host, size, JSON content
type) → FastAPI validation of paths, queries and bodies (422 naming the field) → a route. Routes
turn tracewire's own errors into 4xx answers with the message; an unexpected exception is logged
and answered 500 without a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tracewire._version import __version__
from tracewire.server import (
    attention_routes,
    attribution_routes,
    feature_routes,
    graph_routes,
    search_routes,
    steer_routes,
    ui_routes,
)
from tracewire.server.attribution_jobs import AttributionJobs
from tracewire.server.context import ServerContext
from tracewire.server.feature_service import FeatureService
from tracewire.server.graph_files import GraphDirectory
from tracewire.server.graph_store import GraphStore
from tracewire.server.request_guard import RequestGuard
from tracewire.server.schemas import ServerInfo
from tracewire.server.steering import Steerer

logger = logging.getLogger(__name__)

#: Largest request body (qParams of 10k pins fit; nothing the UI sends comes close).
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
#: Host names answered by default (loopback). Binding elsewhere adds the bound name.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def create_app(
    graph_dir: str | os.PathLike[str],
    *,
    features: FeatureService | None = None,
    steerer: Steerer | None = None,
    read_only: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    attribution: AttributionJobs | None = None,
) -> FastAPI:
    """The explorer app serving the graphs of ``graph_dir``.

    ``features``: feature cards and labels (a :class:`FeatureService` over a FeatureStore);
    ``steerer``: enables POST /api/steer; ``read_only``: refuse to save qParams and labels;
    ``allowed_hosts``: ``Host`` names answered (None: any, for a deliberate public bind);
    ``attribution``: runs ``tracewire attribute`` jobs started from the page.
    """
    directory = GraphDirectory(graph_dir)
    context = ServerContext(
        directory=directory,
        graphs=GraphStore(directory),
        features=features,
        steerer=steerer,
        read_only=read_only,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if features is not None:
            features.close()
        if steerer is not None:
            steerer.close()
        if attribution is not None:
            attribution.close()

    app = FastAPI(
        title="tracewire graph explorer",
        version=__version__,
        description=(
            "Attribution graphs of a directory, feature cards, subgraph scores, saved frontend state "
            "and steering. Every response is served locally; nothing is fetched from the network."
        ),
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.tracewire = context
    app.state.static_files = ui_routes.static_files()
    app.state.attribution = attribution
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts)

    @app.get("/api/info", response_model=ServerInfo, tags=["server"], summary="What this server can do")
    def info() -> ServerInfo:
        return ServerInfo(
            version=__version__,
            features=features is not None,
            labels_writable=features is not None and features.writable and not read_only,
            steering=steerer is not None,
            attribution=attribution is not None and not read_only,
            read_only=read_only,
            max_body_bytes=max_body_bytes,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the offending input, which can be NaN (not JSON) or large.
        errors = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")),
             "type": str(error.get("type", ""))}
            for error in exc.errors()
        ]  # fmt: skip
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    for module in (
        graph_routes,
        attention_routes,
        feature_routes,
        steer_routes,
        search_routes,
        attribution_routes,
        ui_routes,
    ):
        app.include_router(module.router)

    return app
