"""The explorer server stays up: cross-origin writes refused, idle connections closed, logs bounded.

The connection tests run the real uvicorn server (with ``serving.server_config``) in a thread on
a free loopback port, so what is tested is the protocol class and limits ``tracewire serve`` uses.
Every wait is for the condition asserted (a closed socket, an answer), bounded by a deadline.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.server.asgi import raw_request
from tests.server.fakes import write_demo_directory
from tracewire.server import create_app, serving


@pytest.fixture
def app(tmp_path: Path):
    write_demo_directory(tmp_path / "graphs")
    return create_app(tmp_path / "graphs")


SAVE = "/api/graphs/small/qparams"
BODY = (
    b'{"qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": null, "sg_pos": ""}}'
)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1"},
    ],
)
def test_writes_from_another_origin_are_403(app, headers: dict[str, str]) -> None:
    response = raw_request(app, "POST", SAVE, BODY, headers=headers)
    assert response.status == 403, response.body
    assert b"cross-origin" in response.body


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://127.0.0.1"}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1"}],
)
def test_same_origin_and_non_browser_writes_pass_the_guard(app, headers: dict[str, str]) -> None:
    response = raw_request(app, "POST", SAVE, BODY, headers=headers)
    assert response.status != 403, response.body


def test_reads_from_another_origin_are_not_blocked(app) -> None:
    response = raw_request(app, "GET", "/api/graphs", headers={"Origin": "http://evil.example"})
    assert response.status == 200


@pytest.fixture
def live(app, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(serving, "HEAD_TIMEOUT_S", 0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(serving.server_config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _get(port: int, path: str = "/api/graphs") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def _closed_by_server(conn: socket.socket, deadline: float) -> bool:
    conn.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slow_and_idle_connections_are_closed_and_the_server_keeps_answering(live: int) -> None:
    idle = [socket.create_connection(("127.0.0.1", live), timeout=5) for _ in range(40)]
    slow = [socket.create_connection(("127.0.0.1", live), timeout=5) for _ in range(40)]
    for conn in slow:
        conn.sendall(b"GET /api/graphs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head never ends
    try:
        assert _get(live).startswith(b"HTTP/1.1 200")  # answered while 80 connections hang on
        deadline = time.monotonic() + 20
        assert all(_closed_by_server(conn, deadline) for conn in idle + slow)
        assert _get(live).startswith(b"HTTP/1.1 200")
    finally:
        for conn in idle + slow:
            conn.close()


def test_a_dribbled_body_is_a_408(live: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracewire.server import request_guard

    monkeypatch.setattr(request_guard, "BODY_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", live), timeout=20) as conn:
        head = "POST /api/graphs/small/subgraph-scores HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        conn.sendall(head.encode() + b'{"pinnedIds": ')  # and the rest never comes
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.endswith(b"}"):
                break
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert _get(live).startswith(b"HTTP/1.1 200")


def test_the_log_budget_caps_records_and_tracebacks() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    budget = serving.LogBudget(per_second=10, tracebacks_per_minute=2)
    handler.addFilter(budget)
    logger = logging.getLogger("tracewire.test.flood")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        start = time.monotonic()
        for i in range(5000):
            try:
                raise ValueError(i)
            except ValueError:
                logger.exception("bad request %d", i)
        seconds = int(time.monotonic() - start) + 1
    finally:
        logger.removeHandler(handler)
    assert len(records) <= 10 * (seconds + 1)
    assert sum(1 for r in records if r.exc_info) <= 2 * (seconds // 60 + 2)
