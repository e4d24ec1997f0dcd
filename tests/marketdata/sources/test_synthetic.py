"""Synthetic bars depend only on the symbol and the session, never on the range asked for."""

from __future__ import annotations

from datetime import date

import polars as pl

from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource


def test_daily_bars_do_not_depend_on_the_requested_range():
    src = SyntheticBarSource(3)
    long = src.fetch_bars(None, date(2013, 1, 2), date(2013, 3, 29), "1d")
    early = src.fetch_bars(None, date(2013, 1, 2), date(2013, 2, 22), "1d")
    late = src.fetch_bars(None, date(2013, 2, 25), date(2013, 3, 29), "1d")
    assert pl.concat([early, late]).sort("symbol", "ts").equals(long.sort("symbol", "ts"))


def test_consecutive_loads_are_continuous():
    """The next session's open is near the previous close (a gap of a few percent at most)."""
    src = SyntheticBarSource(5)
    a = src.fetch_bars(None, date(2013, 2, 1), date(2013, 2, 22), "1d")
    b = src.fetch_bars(None, date(2013, 2, 25), date(2013, 2, 25), "1d")
    last_close = a.group_by("symbol").agg(pl.col("close").last())
    joined = last_close.join(b.select("symbol", "open"), on="symbol")
    assert joined.height == 5
    assert ((joined["open"] / joined["close"] - 1).abs() < 0.1).all()


def test_intraday_bars_do_not_depend_on_the_requested_range():
    src = SyntheticBarSource(2)
    both = src.fetch_bars(None, date(2013, 2, 28), date(2013, 3, 1), "5m")
    first = src.fetch_bars(None, date(2013, 2, 28), date(2013, 2, 28), "5m")
    assert both.filter(pl.col("ts").dt.date() == date(2013, 2, 28)).equals(first)
