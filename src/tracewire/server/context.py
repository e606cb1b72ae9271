"""What every route needs: the graph directory and store, the feature service, the steerer."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from tracewire.errors import GraphFormatError
from tracewire.server.feature_service import FeatureService
from tracewire.server.graph_files import GraphDirectory, GraphFile
from tracewire.server.graph_store import GraphStore, LoadedGraph
from tracewire.server.steering import Steerer


@dataclass
class ServerContext:
    directory: GraphDirectory
    graphs: GraphStore
    features: FeatureService | None
    steerer: Steerer | None
    read_only: bool

    def file(self, slug: str) -> GraphFile:
        """The graph file of ``slug``, or 404 (the slug is looked up, never joined onto a path)."""
        found = self.directory.find(slug)
        if found is None:
            raise HTTPException(
                404, f"no graph {slug!r} in the served directory (GET /api/graphs lists them)"
            )
        return found

    def loaded(self, slug: str) -> LoadedGraph:
        """The loaded graph of ``slug``; 404 if there is none, 422 if its file cannot be read."""
        file = self.file(slug)
        try:
            return self.graphs.get(file)
        except FileNotFoundError:
            raise HTTPException(404, f"graph {slug!r} was removed from the served directory") from None
        except GraphFormatError as exc:
            raise HTTPException(422, f"graph {slug!r} cannot be read: {exc}") from None
        except OSError as exc:
            raise HTTPException(422, f"graph {slug!r} cannot be read: {exc.strerror or exc}") from None


def server_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.tracewire
    return context
