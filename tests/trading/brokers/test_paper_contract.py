"""The broker contract, run on the paper broker (real SQLite ops store, in-memory bars)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.store import OpsStore

from .contract import BrokerContract


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _bar(symbol: str, ts: datetime, price: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [symbol],
            "timeframe": ["1h"],
            "ts": [ts],
            "open": [price],
            "high": [price * 1.01],
            "low": [price * 0.99],
            "close": [price],
            "volume": [1000.0],
        }
    )


class TestPaperBrokerContract(BrokerContract):
    symbol = "AAA"
    reference_price = Decimal("100")
    account = "contract"

    @pytest.fixture
    def broker(self, tmp_path) -> Iterator[PaperBroker]:
        store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
        start = datetime(2024, 1, 2, 15, 0)
        feed = PolarsBarFeed(_bar(self.symbol, start, 100.0))
        clock = _Clock(start + timedelta(minutes=30))
        broker = PaperBroker(store, feed, account=self.account, clock=clock)
        broker._contract_clock = clock  # type: ignore[attr-defined]
        yield broker
        store.close()

    def advance_market(self, broker: PaperBroker) -> None:
        clock = broker._contract_clock  # type: ignore[attr-defined]
        next_ts = clock.now.replace(minute=0) + timedelta(hours=1)
        assert isinstance(broker.feed, PolarsBarFeed)
        broker.feed.append(_bar(self.symbol, next_ts, 100.0))
        broker.process_bars()
        clock.now = next_ts + timedelta(minutes=30)
