"""API throughput/latency and WebSocket push latency against a real uvicorn process.

    .venv/bin/python bench/api.py [--requests 20000] [--concurrency 100] [--ws-clients 200] [--rounds 5] [--workers 1]

Builds a temp warehouse (20 symbols x 500 daily bars, ~2,000 signals), publishes a serving
snapshot, creates an API key, and starts `trading api` (one uvicorn worker) on a free port.

1. REST: ``--requests`` GET /signals?limit=50 from ``--concurrency`` concurrent clients, each
   its own kept-alive connection, back to back (closed loop); requests/second and
   p50/p90/p99/max latency, and the server's CPU per request. Then the same with every
   request a different page (no repeats: each one queries DuckDB and encodes anew).
2. Push: ``--ws-clients`` websockets clients subscribe to "signals"; each round writes one
   new signal into the warehouse and publishes a snapshot; latency per client is from the
   moment publish_snapshot returned (the file was switched in) to the client receiving the
   item (and, for reference, from the start of the publish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import websockets

from trading_api.keys import create_key
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.trading.store import OpsStore

SYMBOLS = [f"S{i:02d}" for i in range(20)]
CLI = "import typer; from trading_api.cli import register; app = typer.Typer(); register(app); app()"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def build(home: Path, days: int) -> None:
    wh = home / "warehouse.duckdb"
    start = date(2022, 1, 3)
    rows = []
    for s in SYMBOLS:
        for i in range(days):
            d = start + timedelta(days=i)
            rows.append({"symbol": s, "timeframe": "1d", "ts": datetime(d.year, d.month, d.day), "session_date": d,
                         "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0 + (i % 7), "volume": 1e5})
    with writer(wh) as con:
        upsert_bars(con, "raw.bars_daily", pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")}), "bench")
        con.execute(
            """CREATE TABLE marts.signals AS
               SELECT 'crp_daily' AS scan, symbol, timeframe, ts, session_date,
                      CASE WHEN hash(symbol, ts) % 2 = 0 THEN 'crp_long' ELSE 'crp_short' END AS kind,
                      'long' AS direction, (hash(ts, symbol) % 100)::DOUBLE AS score, 'bench' AS reason,
                      close, NULL::DOUBLE AS level, 'fp' AS rule_fingerprint, now()::TIMESTAMP AS as_of
               FROM raw.bars_daily WHERE hash(symbol, ts) % 5 = 0"""
        )
    publish_snapshot(wh, home / "serving")


def cpu_seconds(pid: int) -> float:
    """user+system CPU of a process (Linux /proc), to separate server cost from the load generator's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One GET on a kept-alive connection: (status, body). Content-Length bodies only (what
    the API sends for JSON)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def rest_bench(url: str, key: str, n: int, concurrency: int, distinct: bool = False) -> dict:
    """``concurrency`` clients, each its own kept-alive connection, issuing GETs back to back
    (closed loop, no think time) until ``n`` requests are done.

    The load generator is a minimal HTTP/1.1 client on raw asyncio streams (uvloop), not
    httpx: on a 2-core machine the generator shares the CPU with the server, and httpx's own
    ~0.5 ms per request would be measured as server latency.

    ``distinct``: every request asks for a different page (``offset=i``), so none is a
    repeat: the cost of a cold snapshot query (DuckDB + pydantic) on every request.
    """
    host, port = url.removeprefix("http://").split(":")

    def request_for(i: int) -> bytes:
        path = f"/signals?limit=50&offset={i}" if distinct else "/signals?limit=50"
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n\r\n".encode()

    request = request_for(0)
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in counter:
                req = request_for(i + 1) if distinct else request
                t = time.perf_counter()
                status, _body = await _http_get(reader, writer, req)
                latencies.append(time.perf_counter() - t)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    # warm up (and check the answer is what we think it is)
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(20):
        status, body = await _http_get(reader, writer, request)
        assert status == 200 and len(json.loads(body)["items"]) == 50, (status, body[:200])
    writer.close()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "requests": n, "concurrency": concurrency, "distinct_queries": distinct, "errors": errors, "seconds": round(wall, 2),
        "rps": round(n / wall, 1), "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p90_ms": round(pct(latencies, 90) * 1000, 2), "p99_ms": round(pct(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


async def push_bench(ws_url: str, key: str, home: Path, clients: int, rounds: int) -> dict:
    conns = []
    for _ in range(clients):
        ws = await websockets.connect(f"{ws_url}/ws?api_key={key}", max_queue=None)
        await ws.send(json.dumps({"action": "subscribe", "channels": ["signals"]}))
        while json.loads(await ws.recv())["type"] != "subscribed":
            pass
        conns.append(ws)
    after_publish: list[float] = []
    from_start: list[float] = []
    publish_ms: list[float] = []
    missing = 0
    for r in range(rounds):
        received: list[float] = [0.0] * clients

        async def listen(i: int, ws, received: list[float] = received) -> None:
            while True:
                m = json.loads(await ws.recv())
                if m["type"] == "item":
                    received[i] = time.monotonic()
                    return

        tasks = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(conns)]
        d = date(2030, 1, 1) + timedelta(days=r)

        def publish(d: date = d) -> tuple[float, float]:
            with writer(home / "warehouse.duckdb") as con:
                con.execute(
                    "INSERT INTO marts.signals VALUES ('crp_daily', 'S00', '1d', ?, ?, 'crp_long', 'long', 99, 'bench', 100, NULL, 'fp', now()::TIMESTAMP)",
                    [datetime(d.year, d.month, d.day), d],
                )
            t_start = time.monotonic()
            publish_snapshot(home / "warehouse.duckdb", home / "serving")
            return t_start, time.monotonic()

        t_start, t_end = await asyncio.to_thread(publish)
        done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
        missing += len(pending)
        publish_ms.append((t_end - t_start) * 1000)
        for t in received:
            if t:
                after_publish.append(max(0.0, t - t_end))
                from_start.append(t - t_start)
        await asyncio.sleep(0.3)
    for ws in conns:
        await ws.close()
    return {
        "clients": clients, "rounds": rounds, "missing": missing,
        "publish_ms_median": round(statistics.median(publish_ms), 1),
        "p50_ms_after_publish": round(pct(after_publish, 50) * 1000, 1),
        "p99_ms_after_publish": round(pct(after_publish, 99) * 1000, 1),
        "max_ms_after_publish": round(max(after_publish) * 1000, 1),
        "p50_ms_from_publish_start": round(pct(from_start, 50) * 1000, 1),
        "p99_ms_from_publish_start": round(pct(from_start, 99) * 1000, 1),
    }


def run(coro):  # noqa: ANN001, ANN201
    """asyncio.run on uvloop (what uvicorn serves on), so the generator costs as little as it can."""
    import uvloop

    return uvloop.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--ws-clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--days", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        build(home, args.days)
        store = OpsStore(f"sqlite:///{home / 'ops.sqlite'}")
        _r, key = create_key(store, "bench")
        store.close()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
        # the serving path, not the per-key rate limit (one key sends every request here)
        env.update(TRADING_HOME=str(home), TRADING_API_RATE_LIMIT="0")
        log = open(home / "api.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "api", "--port", str(port), "--timeout-graceful-shutdown", "3",
             "--workers", str(args.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            cpu0 = cpu_seconds(proc.pid)
            rest = run(rest_bench(url, key, args.requests, args.concurrency))
            if args.workers == 1:  # with more, the requests run in child processes
                rest["server_cpu_ms_per_request"] = round((cpu_seconds(proc.pid) - cpu0) / args.requests * 1000, 2)
            print(json.dumps({"rest_get_signals": rest}))
            cpu0 = cpu_seconds(proc.pid)
            n_cold = min(args.requests, 2000)
            cold = run(rest_bench(url, key, n_cold, args.concurrency, distinct=True))
            if args.workers == 1:
                cold["server_cpu_ms_per_request"] = round((cpu_seconds(proc.pid) - cpu0) / n_cold * 1000, 2)
            print(json.dumps({"rest_get_signals_every_query_new": cold}))
            push = run(push_bench(ws_url, key, home, args.ws_clients, args.rounds))
            print(json.dumps({"ws_push": push}))
        finally:
            t = time.monotonic()
            proc.send_signal(2)
            proc.wait(timeout=20)
            print(json.dumps({"shutdown_seconds": round(time.monotonic() - t, 2)}))
            log.close()


if __name__ == "__main__":
    main()
