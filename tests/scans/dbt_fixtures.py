"""Small real bar sets and warehouse helpers for the dbt project tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl

from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import SAMPLE_DATA_DIR, Settings, get_settings

INDICATOR_COLUMNS = [
    "sma_20", "sma_50", "sma_200", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal",
    "macd_hist", "bb_upper", "bb_middle", "bb_lower", "atr_14", "volume_avg_20",
]


def with_session_date(bars: pl.DataFrame) -> pl.DataFrame:
    """Daily: the date of ts; intraday: the America/New_York date of ts."""
    if bars.is_empty():
        return bars.with_columns(pl.lit(None, dtype=pl.Date).alias("session_date"))
    if bars["timeframe"][0] == "1d":
        return bars.with_columns(pl.col("ts").dt.date().alias("session_date"))
    return bars.with_columns(
        pl.col("ts")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("America/New_York")
        .dt.date()
        .alias("session_date")
    )


def goog_daily() -> pl.DataFrame:
    return with_session_date(pl.read_parquet(SAMPLE_DATA_DIR / "GOOG_1d.parquet"))


def eurusd_hourly() -> pl.DataFrame:
    return with_session_date(pl.read_parquet(SAMPLE_DATA_DIR / "EURUSD_1h.parquet"))


def synthetic(n: int, start: date, end: date, timeframe: str, symbols=None) -> pl.DataFrame:
    return with_session_date(SyntheticBarSource(n).fetch_bars(symbols, start, end, timeframe))


def load(warehouse: Path, bars: pl.DataFrame) -> None:
    """Upsert bars (daily or intraday, by each row's timeframe) into the warehouse."""
    with writer(warehouse) as con:
        daily = bars.filter(pl.col("timeframe") == "1d")
        intraday = bars.filter(pl.col("timeframe") != "1d")
        if daily.height:
            upsert_bars(con, "raw.bars_daily", daily, "test")
        if intraday.height:
            upsert_bars(con, "raw.bars_intraday", intraday, "test")


def lake(folder: Path) -> str:
    """A DuckLake (the default warehouse) with its SQLite catalog and data in ``folder``."""
    return f"ducklake:sqlite:{folder / 'catalog.sqlite'}"


def query(warehouse: Path | str, sql: str) -> pl.DataFrame:
    from trading_pipeline.marketdata import warehouse as wh

    con = wh.connect(warehouse, read_only=True)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()


@contextlib.contextmanager
def home_settings(home: Path) -> Iterator[Settings]:
    """The settings of ``home`` (its own warehouse and Dagster instance, whatever the
    environment says) for in-process Dagster runs, as `trading` would read them there; the
    cached settings are dropped before and after, so no later test sees them."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADING_HOME", str(home))
        mp.delenv("TRADING_WAREHOUSE", raising=False)
        mp.delenv("DAGSTER_HOME", raising=False)
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()
