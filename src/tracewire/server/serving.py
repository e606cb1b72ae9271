"""How ``tracewire serve`` runs uvicorn: bounded connections, timeouts and log volume.

uvicorn's defaults let a client hold a connection forever by sending a request head slowly (or
not at all), accept unlimited concurrent connections, and log every malformed request and every
traceback. A few hundred slow connections then make the explorer unreachable and flood the log.
Here:

- :class:`HeadTimeoutH11Protocol` closes a connection that has not delivered a complete request
  head within ``HEAD_TIMEOUT_S`` (at connect and again after every response), so idle or
  slowloris connections do not accumulate; keep-alive idles end after ``KEEP_ALIVE_S``;
- ``limit_concurrency`` bounds open connections plus tasks (503 beyond, never a hang); the
  open-file limit is raised to its hard limit so that bound, not ``EMFILE``, is what applies;
- :class:`LogBudget` caps log records per second per logger and tracebacks per minute, and
  reports how many were dropped, so a flood of bad requests costs kilobytes, not gigabytes.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
"""Seconds a connection may take to send a complete request head."""
KEEP_ALIVE_S = 5
"""Seconds an idle keep-alive connection stays open."""
MAX_CONNECTIONS = 4096
"""Concurrent connections + tasks before uvicorn answers 503."""
LOG_RECORDS_PER_S = 20
"""Log records per second and logger before the rest of that second is dropped (and counted)."""
TRACEBACKS_PER_MINUTE = 3
"""Tracebacks per minute and logger; further records keep their message but not the traceback."""

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_head_timer()  # a request head arrived: the app's response is what we wait for

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


class LogBudget(logging.Filter):
    """Drop log records beyond a per-second budget per logger; strip tracebacks beyond a per-minute one."""

    def __init__(
        self, per_second: int = LOG_RECORDS_PER_S, tracebacks_per_minute: int = TRACEBACKS_PER_MINUTE
    ) -> None:
        super().__init__()
        self.per_second = per_second
        self.tracebacks_per_minute = tracebacks_per_minute
        self._lock = threading.Lock()
        self._second: dict[str, tuple[int, int]] = {}  # logger -> (second, records in it)
        self._minute: dict[str, tuple[int, int]] = {}  # logger -> (minute, tracebacks in it)
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        name = record.name
        with self._lock:
            second, count = self._second.get(name, (-1, 0))
            if int(now) != second:
                second, count = int(now), 0
            if count >= self.per_second:
                self._second[name] = (second, count)
                self._dropped[name] = self._dropped.get(name, 0) + 1
                return False
            self._second[name] = (second, count + 1)
            dropped = self._dropped.pop(name, 0)
            if record.exc_info:
                minute, shown = self._minute.get(name, (-1, 0))
                if int(now // 60) != minute:
                    minute, shown = int(now // 60), 0
                if shown >= self.tracebacks_per_minute:
                    record.exc_info = None
                    record.exc_text = None
                    record.msg = f"{record.msg} (traceback omitted: log budget)"
                else:
                    self._minute[name] = (minute, shown + 1)
        if dropped:
            record.msg = f"[{dropped} earlier log records dropped: log budget] {record.msg}"
        return True


def install_log_budget(budget: LogBudget | None = None) -> LogBudget:
    """Attach one :class:`LogBudget` to every handler of the root and uvicorn loggers."""
    budget = budget or LogBudget()
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if budget not in handler.filters:
                handler.addFilter(budget)
    return budget


def raise_open_file_limit() -> None:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit, so connection limits, not EMFILE, apply."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # not permitted here: keep the current limit
        pass


def server_config(app: Any, *, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's config with the limits of the module docstring (log budget installed)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=HeadTimeoutH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    install_log_budget()  # uvicorn.Config configured its handlers above
    return config
