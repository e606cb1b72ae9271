"""ASGI middleware that refuses requests before any route sees them.

- Bodies larger than ``max_body_bytes`` get 413, whether the client announces the size
  (``Content-Length``) or streams it chunked (bytes are counted as they arrive).
- A request that sends a body to the JSON API must say ``Content-Type: application/json``, else
  415. Browsers send cross-site *simple* requests (HTML forms, ``text/plain`` fetches) without a
  CORS preflight; requiring JSON means another web page cannot make this server write a file.
- A request body must arrive within ``BODY_TIMEOUT_S`` (408 otherwise).
- Only the configured host names are answered (421 otherwise): a web page that re-binds its own
  DNS name to 127.0.0.1 (DNS rebinding) still sends its own name in ``Host``.
- A state-changing request (POST, PUT, PATCH, DELETE) from another origin gets 403: browsers
  send ``Origin`` (and ``Sec-Fetch-Site``) with such requests, and a page of another site must
  not write files here even if a future browser or plugin lets it send JSON. Clients that send
  neither header (curl, scripts, tests) are not browsers acting for another site and pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
BODY_TIMEOUT_S = 30.0
"""Seconds a request body may take to arrive (a body dribbled byte by byte would hold a task forever)."""
_WRITE_METHODS = _BODY_METHODS | {"DELETE"}
_SAME_SITE_FETCH = frozenset({"same-origin", "none"})


class RequestGuard:
    """See the module docstring; ``allowed_hosts=None`` answers any host (a deliberate public bind)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None else {host.lower() for host in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        problem = self._problem(scope, headers)
        if problem is not None:
            status, detail = problem
            await _send_json(send, status, detail)
            return
        await self.app(scope, self._counting(receive), send)

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.allowed_hosts is not None:
            host = _host_name(headers.get("host", ""))
            if host not in self.allowed_hosts:
                return (
                    421,
                    f"host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed_hosts))})",
                )
        if scope["method"] in _WRITE_METHODS:
            cross = _cross_origin(headers)
            if cross is not None:
                return 403, cross
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number"
            if int(length) > self.max_body_bytes:
                return (
                    413,
                    f"request body of {int(length)} bytes exceeds the limit of {self.max_body_bytes} bytes",
                )
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        if scope["method"] in _BODY_METHODS and has_body:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return 415, f"request body must be JSON (Content-Type: application/json), got {media_type!r}"
        return None

    def _counting(self, receive: Receive) -> Receive:
        received = 0
        body_done = False
        deadline: float | None = None

        async def counted() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # after the body only a disconnect can come: wait as long as it takes
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline if deadline is not None else loop.time() + BODY_TIMEOUT_S
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {BODY_TIMEOUT_S:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        return counted


def _cross_origin(headers: dict[str, str]) -> str | None:
    """Why a state-changing request comes from another origin, or None when it does not."""
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site and fetch_site not in _SAME_SITE_FETCH:
        return f"cross-origin write refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "").strip().lower()
    scheme, _, authority = origin.strip().lower().partition("://")
    if scheme not in {"http", "https"} or authority != host:
        return f"cross-origin write refused (Origin {origin!r} is not this server, {host!r})"
    return None


def _host_name(host: str) -> str:
    """``Host`` header without its port; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
