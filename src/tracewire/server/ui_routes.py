"""The browser UI (static files shipped in this package) and an offline API reference page.

Static files are read once from the package into a table; a request names a key of that table,
so no request path is ever joined onto a directory. Every page carries a Content-Security-Policy
that only allows this server as a source: the UI cannot load anything from the network, and a
graph's text cannot inject script.

FastAPI's own ``/docs`` pages load Swagger UI from a CDN, so they are switched off; ``/api/docs``
is a plain page generated from the OpenAPI schema (also at ``/api/openapi.json``).
"""

from __future__ import annotations

import html
import importlib.resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every UI file shipped in ``tracewire/server/static`` as {relative path: (bytes, media type)}."""
    table: dict[str, tuple[bytes, str]] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if suffix in MEDIA_TYPES:
                table[name] = (child.read_bytes(), MEDIA_TYPES[suffix])

    walk(importlib.resources.files("tracewire.server").joinpath("static"), "")
    return table


@router.get("/")
def index(request: Request) -> Response:
    return _static(request, "index.html")


@router.get("/static/{name:path}")
def static(name: str, request: Request) -> Response:
    return _static(request, name)


@router.get("/api/docs")
def api_docs(request: Request) -> HTMLResponse:
    schema = request.app.openapi()
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            parameters = ", ".join(
                html.escape(f"{p['name']} ({p['in']})") for p in operation.get("parameters", [])
            )
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation.get('summary', ''))}</td><td>{parameters}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tracewire API</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:2em}"
        "td{padding:4px 10px;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>tracewire graph explorer API</h1>"
        "<p>Machine-readable: <a href='/api/openapi.json'>/api/openapi.json</a> (OpenAPI 3). "
        "Request bodies are JSON, validated; see the schema for every field.</p>"
        f"<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr>{''.join(rows)}</table>"
        "</body></html>"
    )
    return HTMLResponse(page, headers=SECURITY_HEADERS)


def _static(request: Request, name: str) -> Response:
    files: dict[str, tuple[bytes, str]] = request.app.state.static_files
    found = files.get(name)
    if found is None:
        raise HTTPException(404, f"no UI file {name!r}")
    body, media_type = found
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)
