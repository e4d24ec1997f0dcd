"""API throughput/latency and WebSocket push latency against a real uvicorn process.

    .venv/bin/python bench/api.py [--requests 5000] [--concurrency 100] [--ws-clients 200] [--rounds 5]

Builds a temp warehouse (20 symbols x 500 daily bars, ~2,000 signals), publishes a serving
snapshot, creates an API key, and starts `trading api` (one uvicorn worker) on a free port.

1. REST: ``--requests`` GET /signals?limit=50 from ``--concurrency`` concurrent httpx
   async clients (each its own connection); requests/second and p50/p99 latency.
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
from trading_pipeline.ops_store import OpsStore
from trading_pipeline.serving import publish_snapshot
from trading_pipeline.warehouse import upsert_bars, writer

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


async def rest_bench(url: str, key: str, n: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as c:
            for _ in counter:
                t = time.perf_counter()
                r = await c.get("/signals", params={"limit": 50})
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1

    # warm up
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as c:
        for _ in range(20):
            await c.get("/signals", params={"limit": 50})
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "requests": n, "concurrency": concurrency, "errors": errors, "seconds": round(wall, 2),
        "rps": round(n / wall, 1), "p50_ms": round(pct(latencies, 50) * 1000, 2), "p99_ms": round(pct(latencies, 99) * 1000, 2),
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
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
        env.update(TRADING_HOME=str(home))
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
            rest = asyncio.run(rest_bench(url, key, args.requests, args.concurrency))
            if args.workers == 1:  # with more, the requests run in child processes
                rest["server_cpu_ms_per_request"] = round((cpu_seconds(proc.pid) - cpu0) / args.requests * 1000, 2)
            print(json.dumps({"rest_get_signals": rest}))
            push = asyncio.run(push_bench(ws_url, key, home, args.ws_clients, args.rounds))
            print(json.dumps({"ws_push": push}))
        finally:
            t = time.monotonic()
            proc.send_signal(2)
            proc.wait(timeout=20)
            print(json.dumps({"shutdown_seconds": round(time.monotonic() - t, 2)}))
            log.close()


if __name__ == "__main__":
    main()
