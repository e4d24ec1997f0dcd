"""Fixtures for the trading domain: a real ops store (SQLite file or Postgres database), small real bars."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.risk import RiskEngine, RiskLimits
from trading_pipeline.trading.store import OpsStore

T0 = datetime(2024, 3, 4)  # a Monday; daily bars have ts at session-date midnight


class Clock:
    """A settable clock: the paper broker's idea of "now" (submit times)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def daily_bars(symbol: str, rows: list[tuple[float, float, float, float]], start: datetime = T0) -> pl.DataFrame:
    """Daily bars from (open, high, low, close) tuples, one per consecutive day."""
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(rows),
            "timeframe": ["1d"] * len(rows),
            "ts": [start + timedelta(days=i) for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1_000_000.0] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """The ops store's URL: a new SQLite file, or a new database on the throwaway Postgres
    cluster (tests/pg.py), so every store test runs on both backends the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops.sqlite'}"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.url(request.getfixturevalue("pg_database"))


@pytest.fixture
def store(store_url) -> Iterator[OpsStore]:
    s = OpsStore(store_url)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(hours=22))  # after the first day's close


@pytest.fixture
def feed() -> PolarsBarFeed:
    return PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100)]))


@pytest.fixture
def broker(store, feed, clock) -> PaperBroker:
    return PaperBroker(store, feed, account="acct", starting_cash=Decimal("100000"), clock=clock)


@pytest.fixture
def loose_limits() -> RiskLimits:
    """Limits wide enough that only the rule under test can bite."""
    return RiskLimits(
        max_order_quantity=Decimal("1000000"),
        max_order_notional=Decimal("100000000"),
        max_position_quantity=Decimal("1000000"),
        max_symbol_exposure=Decimal("100000000"),
        max_total_exposure=Decimal("100000000"),
        max_concentration_pct=Decimal("100"),
        daily_loss_limit=Decimal("100000000"),
        max_open_orders=1000,
        max_orders_per_minute=1000,
        price_collar_pct=Decimal("50"),
    )


@pytest.fixture
def risk_engine(store, loose_limits) -> RiskEngine:
    return RiskEngine(loose_limits, store)
