"""The paper broker: point-in-time fills, limits, costs, idempotency and persistence."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl
import pytest

from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.trading.brokers.base import BrokerError
from trading_pipeline.trading.brokers.paper import DuckDBBarFeed, PaperBroker, PolarsBarFeed
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.store import OpsStore

from .conftest import T0, daily_bars

D = Decimal


def mkt(coid: str, side: Side = Side.BUY, qty: str = "10", account: str = "acct", symbol: str = "AAA") -> OrderRequest:
    return OrderRequest(coid, account, symbol, side, D(qty))


def lmt(coid: str, side: Side, limit: str, tif: TimeInForce = TimeInForce.GTC, qty: str = "10") -> OrderRequest:
    return OrderRequest(coid, "acct", "AAA", side, D(qty), OrderType.LIMIT, D(limit), tif)


def test_market_order_fills_at_next_bar_open_never_the_signal_bar(broker, feed, clock) -> None:
    broker.submit(mkt("m1"))
    assert broker.process_bars() == []  # no bar after the submit time yet: nothing fills
    assert broker.order_status("m1").status == OrderStatus.ACCEPTED
    feed.append(daily_bars("AAA", [(101.5, 103, 100, 102), (104, 105, 103, 104)], start=T0 + timedelta(days=1)))
    changed = broker.process_bars()
    o = broker.order_status("m1")
    assert [c.client_order_id for c in changed] == ["m1"]
    assert o.status == OrderStatus.FILLED and o.avg_fill_price == D("101.5")  # day 1 open, not day 0, not day 2
    assert o.fills[0].ts == T0 + timedelta(days=1)


def test_order_submitted_during_a_bar_waits_for_the_next_one(store, clock) -> None:
    feed = PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120)]))
    clock.now = T0 + timedelta(days=1, hours=15)  # mid-session of day 1: its open is in the past
    b = PaperBroker(store, feed, account="acct", clock=clock)
    b.submit(mkt("m1"))
    b.process_bars()
    assert b.order_status("m1").avg_fill_price == D(120)
    clock.now = T0 + timedelta(days=1)  # exactly at a bar's start: that bar has begun, use the next
    b.submit(mkt("m2"))
    b.process_bars()
    assert b.order_status("m2").avg_fill_price == D(120)


def test_limit_buy_fills_only_when_a_later_bar_trades_through(broker, feed) -> None:
    broker.submit(lmt("l1", Side.BUY, "95"))
    feed.append(daily_bars("AAA", [(99, 100, 96, 97)], start=T0 + timedelta(days=1)))
    broker.process_bars()
    assert broker.order_status("l1").status == OrderStatus.ACCEPTED
    feed.append(daily_bars("AAA", [(97, 98, 95, 96)], start=T0 + timedelta(days=2)))  # touches, not through
    broker.process_bars()
    assert broker.order_status("l1").status == OrderStatus.ACCEPTED
    feed.append(daily_bars("AAA", [(97, 98, 94, 96)], start=T0 + timedelta(days=3)))
    broker.process_bars()
    o = broker.order_status("l1")
    assert o.status == OrderStatus.FILLED and o.avg_fill_price == D(95)
    assert o.fills[0].ts == T0 + timedelta(days=3)


def test_limit_gap_fills_at_the_better_open_and_sell_mirrors(broker, feed) -> None:
    broker.submit(lmt("b", Side.BUY, "95"))
    broker.submit(lmt("s", Side.SELL, "104"))
    feed.append(daily_bars("AAA", [(93, 94, 92, 93)], start=T0 + timedelta(days=1)))
    feed.append(daily_bars("AAA", [(100, 105, 99, 104)], start=T0 + timedelta(days=2)))
    broker.process_bars()
    assert broker.order_status("b").avg_fill_price == D(93)  # gapped below the limit: the open
    assert broker.order_status("s").avg_fill_price == D(104)
    assert broker.order_status("s").fills[0].ts == T0 + timedelta(days=2)


def test_day_limit_expires_after_its_session_ioc_cancels_gtc_stays(broker, feed) -> None:
    broker.submit(lmt("day", Side.BUY, "90", TimeInForce.DAY))
    broker.submit(lmt("ioc", Side.BUY, "90", TimeInForce.IOC))
    broker.submit(lmt("gtc", Side.BUY, "90", TimeInForce.GTC))
    feed.append(daily_bars("AAA", [(99, 100, 96, 97)], start=T0 + timedelta(days=1)))
    broker.process_bars()
    assert broker.order_status("day").status == OrderStatus.EXPIRED
    assert broker.order_status("ioc").status == OrderStatus.CANCELLED
    assert broker.order_status("gtc").status == OrderStatus.ACCEPTED
    assert "not reached" in broker.order_status("day").reason


def test_slippage_and_commission(store, feed, clock) -> None:
    b = PaperBroker(
        store, feed, account="acct", starting_cash=D(100000), slippage_bps=D(10),
        commission_per_share=D("0.01"), commission_min=D(1), clock=clock,
    )
    b.submit(mkt("buy", qty="500"))
    b.submit(mkt("small", qty="10"))
    feed.append(daily_bars("AAA", [(100, 101, 99, 100)], start=T0 + timedelta(days=1)))
    b.process_bars()
    buy, small = b.order_status("buy"), b.order_status("small")
    assert buy.avg_fill_price == D("100.1") and buy.fills[0].commission == D(5)
    assert small.fills[0].commission == D(1)  # the minimum
    clock.now = T0 + timedelta(days=1, hours=22)
    b.submit(mkt("sell", Side.SELL, qty="510"))
    b.submit(lmt("lim", Side.BUY, "100"))  # slippage never pushes a limit fill past its limit
    feed.append(daily_bars("AAA", [(100, 101, 98, 100)], start=T0 + timedelta(days=2)))
    b.process_bars()
    assert b.order_status("sell").avg_fill_price == D("99.9")
    assert b.order_status("lim").avg_fill_price == D(100)
    acct = b.account()
    expected = D(100000) - D("100.1") * 510 - 5 - 1 + D("99.9") * 510 - D("5.10") - D(100) * 10 - 1
    assert acct.cash == expected
    assert acct.equity == expected + D(10) * D(100)


def test_submit_is_idempotent_and_state_survives_a_new_instance(store_url, feed, clock) -> None:
    s1 = OpsStore(store_url)
    b1 = PaperBroker(s1, feed, account="acct", clock=clock)
    first = b1.submit(mkt("m1"))
    again = b1.submit(mkt("m1", qty="999"))  # a retry with the same id: the first order stands
    assert again.broker_order_id == first.broker_order_id and again.quantity == D(10)
    feed.append(daily_bars("AAA", [(101, 102, 100, 101)], start=T0 + timedelta(days=1)))
    b1.process_bars()
    s1.close()

    s2 = OpsStore(store_url)  # as if a second process / a retried job
    b2 = PaperBroker(s2, feed, account="acct", clock=clock)
    o = b2.order_status("m1")
    assert o.status == OrderStatus.FILLED and o.broker_order_id == first.broker_order_id
    assert b2.submit(mkt("m1")).status == OrderStatus.FILLED
    assert b2.process_bars() == []  # nothing fills twice
    assert [(p.symbol, p.quantity, p.avg_price) for p in b2.positions()] == [("AAA", D(10), D(101))]
    assert b2.account().cash == D(100000) - D(1010)
    s2.close()


def test_rejections_and_errors(broker) -> None:
    r = broker.submit(mkt("u", symbol="NOPE"))
    assert r.status == OrderStatus.REJECTED and "unknown symbol" in r.reason
    r = broker.submit(mkt("w", account="other"))
    assert r.status == OrderStatus.REJECTED and "serves account 'acct'" in r.reason
    with pytest.raises(BrokerError, match="unknown order"):
        broker.cancel("missing")
    with pytest.raises(BrokerError, match="order is rejected"):
        broker.cancel("u")
    broker.submit(mkt("m"))
    with pytest.raises(BrokerError, match="market order has no limit"):
        broker.modify("m", limit_price=D(1))


def test_modify_limit_price_then_fill(broker, feed) -> None:
    broker.submit(lmt("l", Side.BUY, "90"))
    assert broker.modify("l", limit_price=D(98)).status == OrderStatus.ACCEPTED
    feed.append(daily_bars("AAA", [(99, 100, 97, 98)], start=T0 + timedelta(days=1)))
    broker.process_bars()
    assert broker.order_status("l").avg_fill_price == D(98)


def test_duckdb_feed_reads_the_warehouse_read_only(tmp_path, store, clock) -> None:
    path = tmp_path / "warehouse.duckdb"
    bars = daily_bars("AAA", [(100, 101, 99, 100), (102, 103, 101, 102)]).with_columns(
        pl.col("ts").dt.date().alias("session_date")
    )
    with writer(path) as con:
        upsert_bars(con, "raw.bars_daily", bars, source="test")
    feed = DuckDBBarFeed(path)
    assert feed.last_bar("AAA")["close"] == 102
    assert feed.last_bar("NOPE") is None
    assert feed.bars_after("AAA", T0)["ts"].to_list() == [T0 + timedelta(days=1)]
    b = PaperBroker(store, feed, account="acct", clock=clock)
    b.submit(mkt("m"))
    b.process_bars()
    assert b.order_status("m").avg_fill_price == D(102)
    with writer(path):  # the feed holds no lock between calls: a writer can open the file
        pass


FILLER = """
import sys
from datetime import datetime
import polars as pl
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.store import OpsStore
store = OpsStore(sys.argv[1])
b = PaperBroker(store, PolarsBarFeed(pl.read_parquet(sys.argv[2])), account="acct", clock=lambda: datetime(2024, 3, 5))
print(len(b.process_bars()))
"""


def test_two_processes_processing_bars_fill_each_order_once(store_url, feed, clock, tmp_path) -> None:
    import subprocess
    import sys

    s = OpsStore(store_url)
    b = PaperBroker(s, feed, account="acct", clock=clock)
    for i in range(60):
        b.submit(mkt(f"m{i}", qty="1"))
    feed.append(daily_bars("AAA", [(101, 102, 100, 101)], start=T0 + timedelta(days=1)))
    path = tmp_path / "bars.parquet"
    feed.bars.write_parquet(path)
    procs = [subprocess.Popen([sys.executable, "-c", FILLER, store_url, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert sum(int(o) for o, _ in outs) == 60  # each order filled by exactly one of them
    assert [(p.symbol, p.quantity) for p in b.positions()] == [("AAA", D(60))]
    assert all(len(b.order_status(f"m{i}").fills) == 1 for i in range(60))
    s.close()
