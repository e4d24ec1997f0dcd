"""A tiny warehouse built by hand: raw bars, marts.signals and marts.indicators_daily.

No dbt: the signals are rows we write, so each test knows exactly which trades to expect.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from trading_pipeline.marketdata import warehouse as wh

# AAA: six sessions; the prices make the hand-checked P&L easy to follow.
SESSIONS = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4), date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9)]
AAA = [  # (open, high, low, close)
    (10.0, 10.5, 9.5, 10.0),
    (10.0, 10.5, 9.5, 10.0),  # d2: the breakout_up signal's bar
    (11.0, 12.5, 10.5, 12.0),  # d3: entry at this open (11)
    (12.0, 13.5, 11.5, 13.0),
    (14.0, 14.5, 13.5, 14.0),  # d5: exit at this open (14) with hold=2
    (15.0, 15.5, 14.5, 15.0),
]
BBB = [(50.0, 51.0, 49.0, 50.0)] * 6


def bars_frame(prices: dict[str, list[tuple[float, float, float, float]]]) -> pl.DataFrame:
    rows = []
    for sym, series in prices.items():
        for d, (o, h, lo, c) in zip(SESSIONS, series, strict=True):
            rows.append({"symbol": sym, "timeframe": "1d", "ts": datetime.combine(d, datetime.min.time()),
                         "session_date": d, "open": o, "high": h, "low": lo, "close": c, "volume": 1e6})
    return pl.DataFrame(rows)


def signal(symbol: str, d: date, kind: str, direction: str, scan: str = "breakout_daily") -> dict:
    return {"symbol": symbol, "timeframe": "1d", "ts": datetime.combine(d, datetime.min.time()), "session_date": d,
            "kind": kind, "direction": direction, "score": 1.0, "reason": "test", "scan": scan}


SIGNAL_SCHEMA = {"symbol": pl.Utf8, "timeframe": pl.Utf8, "ts": pl.Datetime("us"), "session_date": pl.Date,
                 "kind": pl.Utf8, "direction": pl.Utf8, "score": pl.Float64, "reason": pl.Utf8, "scan": pl.Utf8}


def build_warehouse(path: Path, prices: dict | None = None, signals: list[dict] | None = None,
                    atr: float | None = 1.0) -> Path:
    """``atr``: every bar's atr_14 in marts.indicators_daily (None: NULL)."""
    prices = prices if prices is not None else {"AAA": AAA, "BBB": BBB}
    bars = bars_frame(prices)
    sig = pl.DataFrame(signals or [], schema=SIGNAL_SCHEMA)
    ind = bars.select("symbol", "timeframe", "ts", "session_date", "close").with_columns(
        pl.lit(atr, pl.Float64).alias("atr_14"))
    with wh.writer(path) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars, source="t")
        con.register("_sig", sig)
        con.execute("CREATE OR REPLACE TABLE marts.signals AS SELECT * FROM _sig")
        con.register("_ind", ind)
        con.execute("CREATE OR REPLACE TABLE marts.indicators_daily AS SELECT * FROM _ind")
    return path


@pytest.fixture
def tiny_warehouse(tmp_path):
    """AAA gets a breakout_up on d2; BBB a breakout_down on d3 (no short: shorting is off)."""
    return build_warehouse(
        tmp_path / "wh.duckdb",
        signals=[signal("AAA", SESSIONS[1], "breakout_up", "long"), signal("BBB", SESSIONS[2], "breakout_down", "short")],
    )
