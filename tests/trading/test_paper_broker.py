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


# ---- stops, trailing stops and time in force -----------------------------------------------
def stp(coid: str, side: Side, stop: str, tif: TimeInForce = TimeInForce.GTC, limit: str | None = None) -> OrderRequest:
    otype = OrderType.STOP_LIMIT if limit is not None else OrderType.STOP
    return OrderRequest(coid, "acct", "AAA", side, D(10), otype, D(limit) if limit else None, tif, stop_price=D(stop))


def trail(coid: str, side: Side, *, pct: str | None = None, amount: str | None = None,
          tif: TimeInForce = TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(coid, "acct", "AAA", side, D(10), OrderType.TRAILING_STOP, None, tif,
                        trail_percent=D(pct) if pct else None, trail_amount=D(amount) if amount else None)


def day(n: int, *rows: tuple[float, float, float, float]) -> pl.DataFrame:
    return daily_bars("AAA", list(rows), start=T0 + timedelta(days=n))


def test_stop_triggers_only_when_a_bar_trades_through_and_fills_at_the_stop(broker, feed) -> None:
    broker.submit(stp("b", Side.BUY, "105"))
    broker.submit(stp("s", Side.SELL, "95"))
    feed.append(day(1, (101, 105, 95, 102)))  # touches both stops, trades through neither
    broker.process_bars()
    assert broker.order_status("b").status == OrderStatus.ACCEPTED
    assert broker.order_status("s").status == OrderStatus.ACCEPTED
    feed.append(day(2, (102, 106, 94, 100)))
    broker.process_bars()
    b, s = broker.order_status("b"), broker.order_status("s")
    assert (b.status, b.avg_fill_price, b.fills[0].ts) == (OrderStatus.FILLED, D(105), T0 + timedelta(days=2))
    assert (s.status, s.avg_fill_price) == (OrderStatus.FILLED, D(95))


def test_stop_gapping_past_fills_at_the_open_with_slippage_against_us(store, feed, clock) -> None:
    b = PaperBroker(store, feed, account="acct", slippage_bps=D(10), clock=clock)
    b.submit(stp("b", Side.BUY, "105"))
    b.submit(stp("s", Side.SELL, "95"))
    feed.append(day(1, (110, 112, 108, 111)))  # gaps above the buy stop
    b.process_bars()
    assert b.order_status("b").avg_fill_price == D("110.11")  # the open 110, not the stop 105; + 10 bps
    assert b.order_status("s").status == OrderStatus.ACCEPTED
    feed.append(day(2, (90, 92, 88, 91)))  # gaps below the sell stop
    b.process_bars()
    assert b.order_status("s").avg_fill_price == D("89.91")


def test_stop_limit_becomes_a_limit_and_a_gap_past_the_limit_does_not_fill(broker, feed) -> None:
    broker.submit(stp("gap", Side.BUY, "105", limit="106"))
    broker.submit(stp("in", Side.BUY, "103", limit="104"))
    feed.append(day(1, (108, 110, 107, 109)))  # opens past both stops and both limits, never back
    broker.process_bars()
    assert broker.order_status("gap").status == OrderStatus.ACCEPTED  # triggered but not filled
    assert broker.order_status("in").status == OrderStatus.ACCEPTED
    with broker.store.reading() as conn:
        import sqlalchemy as sa

        from trading_pipeline.trading.store.schema import paper_orders

        trig = conn.execute(sa.select(paper_orders.c.triggered_at).where(paper_orders.c.client_order_id == "gap")).scalar()
    assert trig == T0 + timedelta(days=1)  # the book remembers the trigger
    feed.append(day(2, (107, 108, 105.5, 106)))  # now a limit at 106: trades through it
    broker.process_bars()
    o = broker.order_status("gap")
    assert (o.status, o.avg_fill_price, o.fills[0].ts) == (OrderStatus.FILLED, D(106), T0 + timedelta(days=2))
    assert broker.order_status("in").status == OrderStatus.ACCEPTED  # its limit 104 not reached


def test_stop_limit_triggered_inside_a_bar_fills_at_the_stop_only_below_its_limit(broker, feed) -> None:
    broker.submit(stp("room", Side.BUY, "103", limit="104"))
    broker.submit(stp("tight", Side.BUY, "103", limit="103"))
    broker.submit(stp("sell", Side.SELL, "97", limit="96"))
    feed.append(day(1, (100, 104, 96, 101)))
    broker.process_bars()
    assert broker.order_status("room").avg_fill_price == D(103)
    assert broker.order_status("tight").status == OrderStatus.ACCEPTED  # stop == limit: only touched
    assert broker.order_status("sell").avg_fill_price == D(97)


def test_trailing_stop_ratchets_bar_by_bar_and_triggers_like_a_stop(broker, feed, store) -> None:
    import sqlalchemy as sa

    from trading_pipeline.trading.store.schema import paper_orders

    broker.submit(trail("pct", Side.SELL, pct="5"))
    broker.submit(trail("amt", Side.SELL, amount="4"))
    broker.submit(trail("buy", Side.BUY, amount="10.5"))

    def state(coid: str) -> tuple:
        with store.reading() as conn:
            r = conn.execute(sa.select(paper_orders).where(paper_orders.c.client_order_id == coid)).one()
        return r.trail_mark, r.current_stop

    feed.append(day(1, (100, 110, 99, 108)))  # stops 95 / 96 / 110.5 from the open, none hit; marks 110 / 110 / 99
    broker.process_bars()
    assert state("pct") == (D(110), D("104.5")) and state("amt") == (D(110), D(106))
    assert state("buy") == (D(99), D("109.5"))
    feed.append(day(2, (108, 109, 105, 107)))  # amt (stop 106) trades through; pct (104.5) and buy (109.5) not
    broker.process_bars()
    assert broker.order_status("amt").avg_fill_price == D(106)
    assert broker.order_status("pct").status == OrderStatus.ACCEPTED
    assert state("pct") == (D(110), D("104.5"))  # a lower high never lowers the mark
    assert state("buy") == (D(99), D("109.5"))  # a higher low never raises it
    feed.append(day(3, (106, 107, 104, 105)))
    broker.process_bars()
    o = broker.order_status("pct")
    assert (o.status, o.avg_fill_price, o.fills[0].ts) == (OrderStatus.FILLED, D("104.5"), T0 + timedelta(days=3))
    assert broker.order_status("buy").status == OrderStatus.ACCEPTED
    feed.append(day(4, (112, 113, 111, 112)))  # gaps above the buy's stop 109.5: fills at the open
    broker.process_bars()
    assert broker.order_status("buy").avg_fill_price == D(112)


def test_trailing_stop_is_not_ratcheted_by_the_bar_it_is_checked_on(broker, feed) -> None:
    broker.submit(trail("t", Side.SELL, amount="5"))
    feed.append(day(1, (100, 120, 96, 110)))  # high 120 would set a stop of 115 that the low 96 is under
    broker.process_bars()
    assert broker.order_status("t").status == OrderStatus.ACCEPTED  # checked against 95 (open - 5)


def test_day_stop_expires_at_the_session_close_gtc_stays(broker, feed) -> None:
    broker.submit(stp("day", Side.BUY, "110", TimeInForce.DAY))
    broker.submit(stp("gtc", Side.BUY, "110", TimeInForce.GTC))
    broker.submit(trail("tday", Side.SELL, pct="10", tif=TimeInForce.DAY))
    feed.append(day(1, (101, 105, 99, 104)))
    broker.process_bars()
    d = broker.order_status("day")
    assert d.status == OrderStatus.EXPIRED and "stop not triggered" in d.reason
    assert broker.order_status("tday").status == OrderStatus.EXPIRED
    assert broker.order_status("gtc").status == OrderStatus.ACCEPTED


def test_ioc_gets_only_the_first_bar(broker, feed) -> None:
    broker.submit(lmt("miss", Side.BUY, "99", TimeInForce.IOC))
    broker.submit(lmt("hit", Side.BUY, "99", TimeInForce.IOC))
    feed.append(day(1, (100, 101, 98.5, 100)))
    broker.process_bars()
    assert broker.order_status("hit").avg_fill_price == D(99)
    broker.submit(lmt("late", Side.BUY, "95", TimeInForce.IOC))
    feed.append(day(2, (100, 101, 99.5, 100), (96, 97, 94, 95)))
    broker.process_bars()
    late = broker.order_status("late")
    assert late.status == OrderStatus.CANCELLED and late.filled_quantity == 0  # day 3 would have filled it


def test_opg_fills_only_at_the_session_open(broker, feed) -> None:
    broker.submit(OrderRequest("mkt", "acct", "AAA", Side.BUY, D(10), OrderType.MARKET, None, TimeInForce.OPG))
    broker.submit(lmt("in", Side.BUY, "101", TimeInForce.OPG))
    broker.submit(lmt("out", Side.BUY, "99", TimeInForce.OPG))  # the low goes under 99 later: too late
    feed.append(day(1, (100, 101, 98, 100)))
    broker.process_bars()
    assert broker.order_status("mkt").avg_fill_price == D(100)
    assert broker.order_status("in").avg_fill_price == D(100)
    out = broker.order_status("out")
    assert out.status == OrderStatus.EXPIRED and "at the open" in out.reason


def test_opg_on_intraday_bars_expires_after_the_session_opened(store, clock) -> None:
    from datetime import datetime

    t = datetime(2024, 3, 5, 14, 30)
    feed = PolarsBarFeed(pl.DataFrame(
        {"symbol": ["AAA"] * 3, "timeframe": ["1h"] * 3, "ts": [t, t + timedelta(hours=1), t + timedelta(days=1)],
         "open": [100.0, 101.0, 105.0], "high": [101.0, 102.0, 106.0], "low": [99.0, 100.0, 104.0],
         "close": [100.0, 101.0, 105.0], "volume": [1.0] * 3},
        schema_overrides={"ts": pl.Datetime("us")},
    ))
    b = PaperBroker(store, feed, account="acct", clock=clock)
    clock.now = t + timedelta(minutes=10)  # mid-session: the next bar is not an open
    b.submit(OrderRequest("mid", "acct", "AAA", Side.BUY, D(1), OrderType.MARKET, None, TimeInForce.OPG))
    clock.now = t - timedelta(hours=1)  # before the session: its first bar is the open
    b.submit(OrderRequest("pre", "acct", "AAA", Side.BUY, D(1), OrderType.MARKET, None, TimeInForce.OPG))
    b.process_bars()
    assert b.order_status("mid").status == OrderStatus.EXPIRED
    assert b.order_status("pre").avg_fill_price == D(100)


def test_contradictory_stop_terms_are_rejected_by_the_broker(broker) -> None:
    r = broker.submit(OrderRequest("x", "acct", "AAA", Side.BUY, D(10), OrderType.STOP, None, TimeInForce.GTC))
    assert r.status == OrderStatus.REJECTED and "needs a positive stop_price" in r.reason
    r = broker.submit(OrderRequest("y", "acct", "AAA", Side.SELL, D(10), OrderType.TRAILING_STOP,
                                   trail_percent=D(1), trail_amount=D(1)))
    assert r.status == OrderStatus.REJECTED and "exactly one of" in r.reason
