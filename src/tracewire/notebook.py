"""The graph explorer inside Jupyter: ``tracewire.show(graph)`` / ``graph.show()``.

As in circuit-tracer's notebooks, the explorer of ``tracewire serve`` (the same app, the same UI,
every control) runs on a loopback port in a background thread, and the notebook shows it in an
``<iframe>``. Everything is local: the server answers from this process and the UI loads nothing
from the network.

Two details make the frame work in a notebook:

- the explorer's pages forbid being framed by other origins (CSP ``frame-ancestors 'self'``), and a
  notebook page is another origin (another port), so this server allows loopback and VS Code
  notebook origins as frame ancestors (:data:`FRAME_ANCESTORS`);
- outside a notebook (a terminal, a script) there is nothing to draw into, so :func:`show` says
  where to open the explorer instead (a warning through ``logging``, visible without set-up, and
  the returned object's ``repr``).
"""

from __future__ import annotations

import html
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tracewire.errors import InvalidArgumentError, TracewireError
from tracewire.graph.graph import Graph

if TYPE_CHECKING:
    from tracewire.server.feature_service import FeatureSource

logger = logging.getLogger(__name__)

#: Origins allowed to frame the explorer: loopback notebooks (Jupyter, JupyterLab) and VS Code's.
FRAME_ANCESTORS = (
    "'self' http://localhost:* http://127.0.0.1:* http://[::1]:* https://localhost:* https://127.0.0.1:* "
    "vscode-webview: https://*.vscode-cdn.net"
)
START_TIMEOUT_S = 30.0
_RUNNING: list[ExplorerView] = []


class ExplorerView:
    """A running explorer: shows as an ``<iframe>`` in Jupyter; ``url``; ``stop()`` ends the server."""

    def __init__(self, url: str, server: _BackgroundServer, *, height: int, keep: Any = None) -> None:
        self.url = url
        self.height = height
        self._server = server
        self._keep = keep  # a temporary directory that must live as long as the server

    def _repr_html_(self) -> str:
        src = html.escape(self.url, quote=True)
        return (
            f'<iframe src="{src}" width="100%" height="{self.height}" '
            'style="border: 1px solid #ddd; border-radius: 4px" loading="eager" '
            f'title="tracewire explorer"></iframe><div style="font-size: 12px">'
            f'tracewire explorer: <a href="{src}" target="_blank" rel="noopener">{src}</a></div>'
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"tracewire explorer ({state}) at {self.url} - open it in a browser; .stop() ends it"

    @property
    def running(self) -> bool:
        return self._server.running

    def stop(self) -> None:
        """Stop the server (the frame goes blank); also done for every view by :func:`stop_all`."""
        self._server.stop()
        if self in _RUNNING:
            _RUNNING.remove(self)


def show(
    graph: Graph | str | os.PathLike[str],
    *,
    features: FeatureSource | str | os.PathLike[str] | None = None,
    model: Any = None,
    transcoders: Any = None,
    read_only: bool = False,
    height: int = 760,
    port: int = 0,
) -> ExplorerView:
    """The explorer for ``graph``, inline when called in Jupyter.

    ``graph``: a :class:`Graph` (saved to a temporary folder), a graph file (its folder is
    served, as by ``tracewire serve``, and the explorer opens on it) or a folder of graphs.
    ``features``: a feature store (path or FeatureSource) for cards and labels; ``model`` and
    ``transcoders`` (a LoadedModel and its TranscoderSet) enable steering; ``port`` 0 picks a free
    one. The server runs until :meth:`ExplorerView.stop`, :func:`stop_all` or the process ends.
    """
    from tracewire.export.standalone import feature_service
    from tracewire.server import Steerer, create_app

    directory, slug, keep = _served_directory(graph)
    if (model is None) != (transcoders is None):
        raise InvalidArgumentError("steering needs both model= and transcoders= (or neither)")
    steerer = None
    if model is not None:
        from tracewire.interventions.api import Intervener

        steerer = Steerer(Intervener(model, transcoders))
    app = create_app(directory, features=feature_service(features, read_only=read_only),
                     steerer=steerer, read_only=read_only)  # fmt: skip
    server = _BackgroundServer(_FrameAncestors(app), port)
    url = f"http://127.0.0.1:{server.port}/" + (f"?graph={quote(slug)}" if slug else "")
    view = ExplorerView(url, server, height=height, keep=keep)
    _RUNNING.append(view)
    if not _in_notebook():
        logger.warning("tracewire explorer running at %s - open it in a browser (view.stop() ends it)", url)
    return view


def stop_all() -> None:
    """Stop every explorer :func:`show` started in this process."""
    for view in list(_RUNNING):
        view.stop()


# --------------------------------------------------------------------------------- internals


def _served_directory(graph: Graph | str | os.PathLike[str]) -> tuple[Path, str | None, Any]:
    """(folder to serve, slug to open or None, object to keep alive) for ``graph``."""
    from tracewire.server.graph_files import GraphDirectory

    if isinstance(graph, Graph):
        keep = tempfile.TemporaryDirectory(prefix="tracewire-show-")
        graph.save(Path(keep.name) / "graph.safetensors")
        return Path(keep.name), "graph", keep
    path = Path(graph).expanduser().resolve()
    if path.is_dir():
        return path, None, None
    if not path.is_file():
        raise InvalidArgumentError(f"show(): {path} is neither a graph file nor a folder of graphs")
    for file in GraphDirectory(path.parent).list():
        if file.path == path:
            return path.parent, file.slug, None
    raise InvalidArgumentError(
        f"show(): {path} is not a graph file the explorer serves (.safetensors, .json, .json.gz)"
    )


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where a returned object with ``_repr_html_`` is drawn)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _FrameAncestors:
    """ASGI middleware: lets notebook pages frame the explorer (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_policy(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, _allow_frames(value) if name.lower() == b"content-security-policy" else value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, send_with_policy)


def _allow_frames(policy: bytes) -> bytes:
    return policy.replace(b"frame-ancestors 'self'", f"frame-ancestors {FRAME_ANCESTORS}".encode())


class _BackgroundServer:
    """uvicorn on a loopback port, in a daemon thread."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        from tracewire.server.serving import server_config

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            sock.close()
            raise InvalidArgumentError(f"show(): cannot listen on 127.0.0.1:{port}: {e}") from e
        self.port = sock.getsockname()[1]
        # The same limits as `tracewire serve` (head/body timeouts, connection cap, log budget).
        config = server_config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"tracewire-explorer-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TracewireError(f"show(): the explorer server did not start on port {self.port}")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started and not self._server.should_exit

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
