"""The graph explorer: a local web server and browser UI for attribution graphs (``tracewire serve``).

- ``app``: :func:`create_app` (FastAPI), the routes and their guards;
- ``graph_files`` / ``graph_store`` / ``graph_view``: which files are served (by slug, never by
  path), loaded graphs pruned on request, and the compact form the UI reads;
- ``feature_service``: feature cards and labels from a FeatureStore; ``steering``: interventions;
- ``static/``: the UI itself, plain JavaScript and CSS written for tracewire (no CDN, no build).

The JSON API is described at ``/api/docs`` and ``/api/openapi.json`` of a running server.
"""

from tracewire.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from tracewire.server.feature_service import FeatureService, FeatureSource, open_feature_store
from tracewire.server.steering import Steerer

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "FeatureService",
    "FeatureSource",
    "Steerer",
    "create_app",
    "open_feature_store",
]
