"""Soak ``tracewire serve`` (loopback only): 500 slow connections + 200 concurrent mixed requests.

Run: ``python benchmarks/server_soak.py [--seconds 40] [--slow 500] [--concurrent 200]``. Prints a
table and writes ``benchmarks/results/server_soak.json``.

The real command (``python -m tracewire.cli.main serve DIR --port P``) serves the demo graphs of
the server tests, its stdout+stderr going to a log file. For ``--seconds``:

- ``--slow`` slowloris connections: half send a request head one header line every second and
  never finish it, half send a POST head announcing 1 MB and then one body byte a second (a
  connection the server closes is reopened at once, so the pressure stays);
- ``--concurrent`` clients loop over a mix of requests: graph listing, graph views, links pages,
  subgraph scores, and bad ones (traversal, malformed JSON, cross-origin writes, garbage that is
  not HTTP, which uvicorn logs);
- one *probe* client plays the user: a graph view request every 0.2 s, timed.

Reported: probe latency p50 / p99 / max and failures (the UI stays responsive), requests served,
connections the server closed, and the size of the server log (bounded by the log budget).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "server_soak.json"
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _request(port: int, raw: bytes, timeout: float = 30.0) -> tuple[int, float]:
    """Send ``raw`` on a fresh connection; (status or -1, seconds until the whole answer)."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else -1
    except (TimeoutError, OSError, ValueError, IndexError):
        status = -1
    return status, time.perf_counter() - start


def _get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n{headers}\r\n".encode()


def _post(path: str, body: bytes, headers: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    )
    return head.encode() + body


MIX: list[tuple[str, bytes]] = [
    ("list", _get("/api/graphs")),
    ("view", _get("/api/graphs/small")),
    ("view-pruned", _get("/api/graphs/demo")),
    ("links", _get("/api/graphs/demo/links?limit=1000")),
    ("scores", _post("/api/graphs/small/subgraph-scores", b'{"pinnedIds": []}')),
    ("traversal", _get("/api/graphs/..%2Fsecret")),
    ("bad-json", _post("/api/graphs/small/subgraph-scores", b'{"pinnedIds": [')),
    ("cross-origin", _post("/api/graphs/small/qparams", b"{}", "Origin: http://evil.example\r\n")),
    ("garbage", b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
    ("missing", _get("/api/graphs/nope")),
]


async def _slowloris(port: int, stop: float, closed: list[int], body: bool) -> None:
    """Hold a connection open by dribbling a request head (or, with ``body``, a POST body) forever."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            if body:
                writer.write(
                    _post("/api/graphs/small/subgraph-scores", b"")[:-2].replace(
                        b"Content-Length: 0", b"Content-Length: 1000000"
                    )
                    + b"\r\n"
                )
            else:
                writer.write(f"GET /api/graphs HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            while time.monotonic() < stop:
                await asyncio.sleep(1.0)
                writer.write(b" " if body else f"X-Slow-{random.randrange(10**6)}: 1\r\n".encode())
                await writer.drain()
                if reader.at_eof():
                    closed[0] += 1  # the server gave up on this connection
                    break
            writer.close()
        except OSError:
            closed[0] += 1
            await asyncio.sleep(0.2)


async def _client(port: int, stop: float, served: dict[str, dict[int, int]]) -> None:
    while time.monotonic() < stop:
        name, raw = random.choice(MIX)
        status, _ = await _request(port, raw)
        row = served.setdefault(name, {})
        row[status] = row.get(status, 0) + 1


async def _probe(port: int, stop: float, latencies: list[float], failures: list[int]) -> None:
    while time.monotonic() < stop:
        status, seconds = await _request(port, _get("/api/graphs/small"))
        if status == 200:
            latencies.append(seconds)
        else:
            failures.append(status)
        await asyncio.sleep(0.2)


async def _soak(port: int, seconds: float, slow: int, concurrent: int) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    closed = [0]
    served: dict[str, dict[int, int]] = {}
    latencies: list[float] = []
    failures: list[int] = []
    tasks = [asyncio.create_task(_slowloris(port, stop, closed, body=i % 2 == 1)) for i in range(slow)]
    await asyncio.sleep(2.0)  # the slow connections are in place before the load starts
    tasks += [asyncio.create_task(_client(port, stop, served)) for _ in range(concurrent)]
    tasks.append(asyncio.create_task(_probe(port, stop, latencies, failures)))
    await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None
    return {
        "probe_requests": len(latencies) + len(failures),
        "probe_failures": len(failures),
        "probe_p50_s": statistics.median(ordered) if ordered else None,
        "probe_p99_s": p99,
        "probe_max_s": ordered[-1] if ordered else None,
        "served": served,
        "slow_connections_closed_by_server": closed[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    from tests.server.fakes import write_demo_directory

    with tempfile.TemporaryDirectory(prefix="tracewire-soak-") as tmp:
        graphs = Path(tmp) / "graphs"
        write_demo_directory(graphs)
        log_path = Path(tmp) / "server.log"
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "tracewire.cli.main", "serve", str(graphs), "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        urllib.request.urlopen(f"http://{HOST}:{port}/api/graphs", timeout=5).read()
                        break
                    except OSError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            raise RuntimeError("the server did not start") from None
                        time.sleep(0.3)
                result = asyncio.run(_soak(port, args.seconds, args.slow, args.concurrent))
                result["server_alive"] = server.poll() is None
                with open(f"/proc/{server.pid}/status") as status:
                    rss = [line for line in status if line.startswith("VmHWM")]
                result["server_peak_rss"] = rss[0].split(":")[1].strip() if rss else None
            finally:
                server.terminate()
                server.wait(timeout=30)
        result["log_bytes"] = log_path.stat().st_size
        result["log_tail"] = log_path.read_text(errors="replace")[-1500:]
    result.update(
        seconds=args.seconds, slow=args.slow, concurrent=args.concurrent, load_average=os.getloadavg()
    )
    print(
        f"probe: {result['probe_requests']} requests, {result['probe_failures']} failed, "
        f"p50 {result['probe_p50_s']:.3f} s, p99 {result['probe_p99_s']:.3f} s, max {result['probe_max_s']:.3f} s"
    )
    total = sum(sum(row.values()) for row in result["served"].values())
    print(
        f"mixed load: {total} requests; slow connections closed by the server: "
        f"{result['slow_connections_closed_by_server']}; server log {result['log_bytes']} bytes; "
        f"server peak RSS {result['server_peak_rss']}"
    )
    for name, row in sorted(result["served"].items()):
        print(f"  {name:14s} {dict(sorted(row.items()))}")
    if not args.no_results:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1))
    ok = result["server_alive"] and result["probe_failures"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
