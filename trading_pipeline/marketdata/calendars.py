"""Exchange calendars (exchange_calendars), cached, with the range the platform needs."""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import exchange_calendars as xc
import pandas as pd
import polars as pl

# The calendar of a symbol nobody said otherwise about (TRADING_EXCHANGE defaults to it too).
DEFAULT_CALENDAR = "XNYS"


def calendar_start() -> date:
    """The first date the calendars cover: ``TRADING_HISTORY_START`` (1950-01-03 by default)."""
    from trading_pipeline.settings import get_settings

    return get_settings().history_start

# exchange -> (calendar name, timezone); the calendar decides sessions and trading hours.
EXCHANGES: dict[str, tuple[str, str]] = {
    "XNYS": ("XNYS", "America/New_York"),
    "XNAS": ("XNAS", "America/New_York"),
    "FX": ("24/7", "UTC"),
    "CRYPTO": ("24/7", "UTC"),
}


def session_of(d: date) -> date:
    """The session a calendar day's bars are filed under: a weekend day's under Friday's
    (24/7 markets trade then; the equity calendars have no session). Loads, checks and the
    CLI name sessions this way."""
    return d - timedelta(days=max(0, d.weekday() - 4))


@lru_cache(maxsize=16)
def get_calendar(name: str) -> xc.ExchangeCalendar:
    try:
        return xc.get_calendar(name, start=calendar_start().isoformat())
    except xc.errors.InvalidCalendarName as exc:
        raise ValueError(f"unknown exchange calendar {name!r}") from exc


def calendar_for_exchange(exchange: str) -> str:
    try:
        return EXCHANGES[exchange][0]
    except KeyError:
        raise ValueError(
            f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}"
        ) from None


@lru_cache(maxsize=64)
def _schedule(name: str) -> pl.DataFrame:
    """Session date, open and close (naive UTC) for every session of the calendar."""
    sched = get_calendar(name).schedule
    return pl.DataFrame(
        {
            "session_date": pd.DatetimeIndex(sched.index).to_numpy().astype("datetime64[D]"),
            "open_utc": sched["open"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(),
            "close_utc": sched["close"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(),
        }
    ).with_columns(pl.col("open_utc", "close_utc").cast(pl.Datetime("us")))


def sessions(name: str, start: date, end: date) -> pl.DataFrame:
    s = _schedule(name)
    return s.filter(pl.col("session_date").is_between(start, end))


def session_dates(name: str, start: date, end: date) -> list[date]:
    return sessions(name, start, end)["session_date"].to_list()

