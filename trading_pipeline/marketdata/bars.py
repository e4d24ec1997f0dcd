"""The canonical bar shape shared by every source, the warehouse and the quality rules.

A bar frame (polars) has exactly these columns. ``ts`` is the bar's start instant as naive
UTC; a daily bar's ``ts`` is its session date at midnight. ``session_date`` is the exchange
session the bar belongs to (added by normalisation, from the symbol's calendar).
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

TIMEFRAMES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "1d": 1440}
INTRADAY_TIMEFRAMES = tuple(t for t in TIMEFRAMES if t != "1d")

SOURCE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "ts": pl.Datetime("us"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

BAR_SCHEMA: dict[str, pl.DataType] = {
    **SOURCE_SCHEMA,
    "session_date": pl.Date(),
}

KEY = ("symbol", "timeframe", "ts")


def empty_bars(schema: dict[str, pl.DataType] = SOURCE_SCHEMA) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def is_intraday(timeframe: str) -> bool:
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAMES)}")
    return timeframe != "1d"


def utcnow() -> datetime:
    """Now as naive UTC: the convention of the warehouse, the bars and the ops store."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(ts: datetime) -> datetime:
    """``ts`` as naive UTC (an aware time converted; a naive one is taken as UTC already)."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts
