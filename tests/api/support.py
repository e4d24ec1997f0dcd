"""Helpers for the API tests: build a real warehouse, publish snapshots, run a real server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import polars as pl

from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.serving.snapshot import watched_path
from trading_pipeline.settings import Settings

START = date(2024, 1, 1)
SYMBOLS = ("GOOG", "MSFT")


def daily_bars(symbol: str, days: int, start: date = START, base: float = 100.0) -> pl.DataFrame:
    rows = []
    for i in range(days):
        d = start + timedelta(days=i)
        c = base + i * 0.5
        rows.append(
            {
                "symbol": symbol, "timeframe": "1d", "ts": datetime(d.year, d.month, d.day), "session_date": d,
                "open": c - 0.3, "high": c + 1.0, "low": c - 1.0, "close": c, "volume": 100_000.0 + i,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")})


def intraday_bars(symbol: str, n: int, start: datetime = datetime(2024, 1, 2, 14, 30)) -> pl.DataFrame:
    rows = []
    for i in range(n):
        ts = start + timedelta(hours=i)
        rows.append(
            {
                "symbol": symbol, "timeframe": "1h", "ts": ts, "session_date": ts.date(),
                "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1000.0,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")})


MARTS_DDL = [
    """CREATE OR REPLACE TABLE marts.indicators_daily AS
       SELECT symbol, ts, session_date, open, high, low, close, volume,
              CASE WHEN count(*) OVER w20 = 20 THEN avg(close) OVER w20 END AS sma_20,
              NULL::DOUBLE AS sma_50, NULL::DOUBLE AS sma_200,
              avg(close) OVER w12 AS ema_12, avg(close) OVER w26 AS ema_26,
              50.0::DOUBLE AS rsi_14, 0.1::DOUBLE AS macd, 0.05::DOUBLE AS macd_signal, 0.05::DOUBLE AS macd_hist,
              close + 2 AS bb_upper, close AS bb_middle, close - 2 AS bb_lower,
              CASE WHEN row_number() OVER (PARTITION BY symbol ORDER BY ts) = 1 THEN 'NaN'::DOUBLE ELSE 2.0 END AS atr_14,
              false AS cpr_narrow, now()::TIMESTAMP AS computed_at
       FROM raw.bars_daily
       WINDOW w20 AS (PARTITION BY symbol ORDER BY ts ROWS 19 PRECEDING),
              w12 AS (PARTITION BY symbol ORDER BY ts ROWS 11 PRECEDING),
              w26 AS (PARTITION BY symbol ORDER BY ts ROWS 25 PRECEDING)""",
    """CREATE TABLE IF NOT EXISTS marts.signals (
        scan VARCHAR, symbol VARCHAR, timeframe VARCHAR, ts TIMESTAMP, session_date DATE, kind VARCHAR,
        direction VARCHAR, score DOUBLE, reason VARCHAR, close DOUBLE, level DOUBLE,
        rule_fingerprint VARCHAR, as_of TIMESTAMP)""",
    """CREATE OR REPLACE VIEW marts.scan_results AS
       SELECT scan, timeframe, session_date, count(*) AS n_signals,
              count(*) FILTER (WHERE direction = 'long') AS n_long,
              count(*) FILTER (WHERE direction = 'short') AS n_short,
              string_agg(symbol, ',' ORDER BY score DESC, symbol) AS symbols,
              arg_max(symbol, score) AS top_symbol, max(score) AS top_score, max(as_of) AS as_of
       FROM marts.signals GROUP BY scan, timeframe, session_date""",
    """CREATE OR REPLACE VIEW marts.alerts AS
       SELECT md5(concat_ws('|', scan, symbol, timeframe, strftime(ts, '%Y-%m-%dT%H:%M:%S'), kind)) AS alert_id,
              scan, symbol, timeframe, ts, session_date, kind, direction, score, reason,
              printf('%s %s %s', symbol, replace(kind, '_', ' '), strftime(ts, '%Y-%m-%d %H:%M')) AS title, as_of
       FROM marts.signals WHERE score >= 70""",
]


def add_signals(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, date, str, float]], scan: str = "crp_daily") -> None:
    """Insert signals (symbol, session date, kind, score) the way the dbt mart holds them."""
    for symbol, d, kind, score in rows:
        direction = "short" if kind.endswith(("down", "short")) else "long"
        con.execute(
            "INSERT INTO marts.signals VALUES (?, ?, '1d', ?, ?, ?, ?, ?, ?, 100.0, NULL, 'fp', now()::TIMESTAMP)",
            [scan, symbol, datetime(d.year, d.month, d.day), d, kind, direction, score, f"{kind} on {symbol} scored {score}"],
        )


def build_warehouse(path: Path, days: int = 60, with_marts: bool = True) -> None:
    with writer(path) as con:
        for i, s in enumerate(SYMBOLS):
            upsert_bars(con, "raw.bars_daily", daily_bars(s, days, base=100.0 + 50 * i), "test")
        upsert_bars(con, "raw.bars_intraday", intraday_bars("EURUSD", 10), "test")
        if with_marts:
            for stmt in MARTS_DDL:
                con.execute(stmt)
            add_signals(
                con,
                [
                    ("GOOG", START + timedelta(days=40), "crp_long", 75.0),
                    ("MSFT", START + timedelta(days=40), "crp_long", 55.0),
                    ("GOOG", START + timedelta(days=45), "breakout_up", 1.2),
                    ("MSFT", START + timedelta(days=50), "crp_short", 80.0),
                ],
            )


@dataclass
class ApiEnv:
    home: Path
    settings: Settings
    warehouse: Path
    serving_dir: Path
    key: str
    store_url: str

    @property
    def snapshot(self) -> Path:
        """The published snapshot's file: the lake pointer (default), or a copied serving.duckdb."""
        return watched_path(self.serving_dir)

    def publish(self) -> Path:
        return publish_snapshot(self.warehouse, self.serving_dir)

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
        env.update(TRADING_HOME=str(self.home), TRADING_WS_POLL_INTERVAL="0.1", TRADING_WS_HEARTBEAT="2")
        return env





def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `trading api` exactly as the lead wires it: register() on a Typer app.
CLI = "import typer; from trading_api.cli import register; app = typer.Typer(); register(app); app()"


class Server:
    """A real uvicorn process serving ``trading_api.main:app`` for ``env``."""

    def __init__(
        self, env: ApiEnv, port: int | None = None, extra_env: dict[str, str] | None = None, workers: int = 1
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        environ = env.environ()
        environ.update(extra_env or {})
        self.log_path = env.home / f"api-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "api", "--host", "127.0.0.1", "--port", str(self.port),
             "--timeout-graceful-shutdown", "3", "--workers", str(workers)],
            cwd=str(env.home), env=environ, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not start: {self.log_path.read_text()}")

    def stop(self) -> float:
        """SIGINT, wait; returns seconds the shutdown took."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return time.monotonic() - t0


# ---- WebSocket clients ------------------------------------------------------------------------
async def recv_json(ws, timeout: float = 5.0) -> dict:  # noqa: ANN001
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws, channels: list[str], **extra) -> tuple[dict, list[dict]]:  # noqa: ANN001, ANN003
    """Send a subscribe; returns the ``subscribed`` reply and anything that came before it."""
    await ws.send(json.dumps({"action": "subscribe", "channels": channels, **extra}))
    before = []
    while True:
        m = await recv_json(ws)
        if m["type"] == "subscribed":
            return m, before
        before.append(m)


async def frames(ws, kind: str, timeout: float, done=lambda out: False) -> list[dict]:  # noqa: ANN001
    """The frames of type ``kind`` received until ``done(frames)`` holds or ``timeout`` s pass."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = await recv_json(ws, left)
        except TimeoutError:
            break
        if m["type"] == kind:
            out.append(m)
    return out

