"""Corporate actions on paper accounts: a split re-shapes positions and working orders on its
ex-date (value unchanged), a dividend moves cash once, a symbol change moves the position, a
delisting refuses new orders; applying twice changes nothing. On SQLite and Postgres (the
``store`` fixture), through the real paper broker and the real ops store."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from trading_pipeline.trading.brokers.paper import PaperBroker
from trading_pipeline.trading.corporate_actions import (
    Action,
    actions_from_rows,
    applied_events,
    apply_actions,
    dividend_cash,
    paper_and_live,
    split_position,
)
from trading_pipeline.trading.execution import reconcile, submit_order, sync_open_orders
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.positions import Position
from trading_pipeline.trading.store import migrations
from trading_pipeline.trading.store.schema import corporate_action_events, paper_orders

from .conftest import T0, daily_bars

D = Decimal
EX = date(2024, 3, 6)  # T0 + 2 days: the ex-date
SPLIT = Action("AAA", EX, "split", ratio=D(2))


def day(feed, n: int, o: float, h: float, lo: float, c: float, symbol: str = "AAA") -> None:
    feed.append(daily_bars(symbol, [(o, h, lo, c)], start=T0 + timedelta(days=n)))


def place(broker, store, risk_engine, coid: str, side: Side, qty: str, otype=OrderType.MARKET, limit=None,
          account: str = "acct", symbol: str = "AAA"):
    req = OrderRequest(coid, account, symbol, side, D(qty), otype, None if limit is None else D(limit), TimeInForce.GTC)
    return submit_order(req, broker=broker, store=store, risk_engine=risk_engine, prices={symbol: D(100)})


def step(broker, store, clock, feed, n: int, bar: tuple, account: str = "acct") -> None:
    """Day ``n``'s bar arrives; the paper broker fills against it; fills reach our store."""
    day(feed, n, *bar)
    broker.process_bars()
    sync_open_orders(store, broker, account)
    clock.now = T0 + timedelta(days=n, hours=22)


def equity(broker) -> Decimal:
    return broker.account().equity


def test_a_held_position_keeps_its_value_through_a_2_for_1_split(broker, store, feed, clock, risk_engine) -> None:
    assert place(broker, store, risk_engine, "buy1", Side.BUY, "100").action == "submitted"
    assert place(broker, store, risk_engine, "lim1", Side.BUY, "50", OrderType.LIMIT, "90").action == "submitted"
    step(broker, store, clock, feed, 1, (100, 101, 99, 100))
    assert [(p.symbol, p.quantity, p.avg_price) for p in broker.positions()] == [("AAA", D(100), D(100))]
    before = equity(broker)
    assert before == D(100000)  # 90,000 cash + 100 x 100

    day(feed, 2, 50, 51, 49, 50)  # the ex-date's bar, at half the price
    assert equity(broker) == D(95000)  # unadjusted, the split would look like a 5,000 loss
    res = apply_actions(store, [SPLIT], EX, ["acct"])
    assert [(r.status, r.quantity_before, r.avg_price_before, r.quantity_after, r.avg_price_after, r.orders_adjusted)
            for r in res] == [("applied", D(100), D(100), D(200), D(50), 1)]

    # the paper broker's book (derived from fills + applied actions) and our store agree: same value
    assert [(p.symbol, p.quantity, p.avg_price) for p in broker.positions()] == [("AAA", D(200), D(50))]
    assert equity(broker) == before
    pos = store.portfolio("acct").positions["AAA"]
    assert (pos.quantity, pos.avg_price) == (D(200), D(50))
    assert store.portfolio("acct").equity({"AAA": D(50)}) == before
    assert reconcile(store, broker, "acct") == []

    # the working limit order: twice the shares at half the limit, in the paper book and in ours
    ours = store.get_order("lim1")
    assert (ours.quantity, ours.limit_price, ours.status) == (D(100), D(45), OrderStatus.ACCEPTED)
    ev = [e for e in store.order_events("lim1") if e.kind == "corporate_action"]
    assert len(ev) == 1 and "quantity 50 -> 100" in ev[0].reason and "limit_price 90 -> 45" in ev[0].reason
    with store.reading() as conn:
        row = conn.execute(sa.select(paper_orders).where(paper_orders.c.client_order_id == "lim1")).one()
    assert (row.quantity, row.limit_price) == (D(100), D(45))

    broker.process_bars()  # the ex-date's bar (low 49) does not reach the new limit 45 ...
    assert broker.order_status("lim1").status == OrderStatus.ACCEPTED
    step(broker, store, clock, feed, 3, (46, 47, 44, 45))  # ... the next one does, on the new terms
    bo = broker.order_status("lim1")
    assert (bo.status, bo.filled_quantity, bo.avg_fill_price) == (OrderStatus.FILLED, D(100), D(45))
    assert {p.symbol: p.quantity for p in broker.positions()} == {"AAA": D(300)}
    assert store.portfolio("acct").quantity("AAA") == D(300)
    assert reconcile(store, broker, "acct") == []

    # applying again (a re-run, a restart) changes nothing
    book = (broker.positions(), broker.account())
    again = apply_actions(store, [SPLIT], EX + timedelta(days=5), ["acct"])
    assert [r.status for r in again] == ["already_applied"]
    assert (broker.positions(), broker.account()) == book
    assert len(applied_events(store, "acct")) == 1
    assert store.get_order("lim1").quantity == D(100)


def test_a_split_not_yet_due_changes_nothing_and_orders_placed_after_it_are_left_alone(
        broker, store, feed, clock, risk_engine) -> None:
    place(broker, store, risk_engine, "buy1", Side.BUY, "100")
    step(broker, store, clock, feed, 1, (100, 101, 99, 100))
    assert apply_actions(store, [SPLIT], EX - timedelta(days=1), ["acct"]) == []  # not due yet
    assert applied_events(store) == []
    step(broker, store, clock, feed, 2, (50, 51, 49, 50))
    # placed on the ex-date's evening at post-split prices: already on the new terms
    assert place(broker, store, risk_engine, "lim2", Side.SELL, "10", OrderType.LIMIT, "60").action == "submitted"
    (res,) = apply_actions(store, [SPLIT], EX, ["acct"])
    assert res.orders_adjusted == 0 and res.quantity_after == D(200)
    assert (store.get_order("lim2").quantity, store.get_order("lim2").limit_price) == (D(10), D(60))


def test_a_dividend_credits_a_long_and_debits_a_short_once_on_its_pay_date(store, feed, clock, risk_engine) -> None:
    long_ = PaperBroker(store, feed, account="long", starting_cash=D(100000), clock=clock)
    short = PaperBroker(store, feed, account="short", starting_cash=D(100000), clock=clock)
    place(long_, store, risk_engine, "L1", Side.BUY, "100", account="long")
    place(short, store, risk_engine, "S1", Side.SELL, "40", account="short")
    day(feed, 1, 100, 101, 99, 100)
    for b, name in ((long_, "long"), (short, "short")):
        b.process_bars()
        sync_open_orders(store, b, name)
    cash = {n: b.account().cash for n, b in (("long", long_), ("short", short))}
    assert cash == {"long": D(90000), "short": D(104000)}
    div = Action("AAA", EX, "dividend", amount=D("0.5"), pay_date=EX + timedelta(days=2))

    assert apply_actions(store, [div], EX, ["long", "short"]) == []  # ex-date passed, not paid yet
    res = apply_actions(store, [div], EX + timedelta(days=2), ["long", "short"])
    assert [(r.account, r.status, r.cash_delta) for r in res] == [("long", "applied", D(50)), ("short", "applied", D(-20))]
    assert long_.account().cash == D(90050) and short.account().cash == D(103980)
    assert store.portfolio("long").cash == D(90050) and store.portfolio("short").cash == D(103980)
    assert {p.quantity for p in long_.positions()} == {D(100)}  # shares unchanged

    again = apply_actions(store, [div], EX + timedelta(days=9), ["long", "short"])
    assert [r.status for r in again] == ["already_applied", "already_applied"]
    assert long_.account().cash == D(90050) and store.portfolio("short").cash == D(103980)


def test_a_symbol_change_moves_the_position_and_a_delisting_refuses_new_orders(
        broker, store, feed, clock, risk_engine) -> None:
    place(broker, store, risk_engine, "buy1", Side.BUY, "10")
    step(broker, store, clock, feed, 1, (100, 101, 99, 100))
    day(feed, 2, 100, 101, 99, 100, symbol="AAB")
    rename = Action("AAA", EX, "symbol_change", new_symbol="AAB")
    apply_actions(store, [rename], EX, ["acct"])
    assert [(p.symbol, p.quantity, p.avg_price) for p in broker.positions()] == [("AAB", D(10), D(100))]
    assert {p.symbol: p.quantity for p in store.portfolio("acct").open_positions()} == {"AAB": D(10)}
    assert reconcile(store, broker, "acct") == []

    gone = Action("AAB", EX + timedelta(days=1), "delisting")
    (res,) = apply_actions(store, [gone], EX + timedelta(days=1), ["acct"])
    assert res.status == "applied" and "left as it is" in res.note and res.quantity_after == D(10)
    assert {p.symbol: p.quantity for p in broker.positions()} == {"AAB": D(10)}  # the position stays
    clock.now = T0 + timedelta(days=3, hours=22)
    req = OrderRequest("after", "acct", "AAB", Side.BUY, D(1), OrderType.MARKET, None, TimeInForce.DAY)
    bo = broker.submit(req)
    assert bo.status == OrderStatus.REJECTED and "delisted on 2024-03-07" in bo.reason


def test_live_accounts_are_left_to_their_broker() -> None:
    class Acct:
        def __init__(self, name: str, broker: str) -> None:
            self.name, self.broker = name, broker

    assert paper_and_live([Acct("p", "paper"), Acct("a", "alpaca"), Acct("i", "ib")]) == (["p"], ["a", "i"])


def test_the_arithmetic_keeps_value_and_signs() -> None:
    p = Position("a", "AAA", D(30), D(90))
    split_position(p, D("0.1"))  # a 1-for-10 reverse split
    assert (p.quantity, p.avg_price) == (D(3), D(900)) and p.quantity * p.avg_price == D(2700)
    assert dividend_cash(D(-40), D("0.5")) == D(-20)


def test_bad_actions_are_refused_with_what_to_fix() -> None:
    with pytest.raises(ValueError, match="split of AAA on 2024-03-06 has no ratio > 0"):
        actions_from_rows([{"symbol": "AAA", "ex_date": EX, "kind": "split", "ratio": None}])
    with pytest.raises(ValueError, match="unknown corporate action kind 'merger'"):
        actions_from_rows([{"symbol": "AAA", "ex_date": EX, "kind": "merger"}])


def test_revision_0008_adds_the_table_unique_per_account_and_action(store) -> None:
    assert migrations.revisions().index("0008_corporate_action_events") == 7
    cols = {c["name"] for c in sa.inspect(store.engine).get_columns("corporate_action_events")}
    assert {"account", "action_key", "quantity_before", "avg_price_after", "cash_delta", "applied_at"} <= cols
    row = {"account": "a", "action_key": "AAA:2024-03-06:split", "symbol": "AAA", "ex_date": EX, "kind": "split",
           "effective_date": EX, "quantity_before": D(1), "avg_price_before": D(1), "quantity_after": D(2),
           "avg_price_after": D("0.5"), "cash_delta": D(0), "orders_adjusted": 0, "applied_at": T0}
    with store.transaction() as conn:
        conn.execute(corporate_action_events.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError), store.transaction() as conn:
        conn.execute(corporate_action_events.insert().values(**row))
    with store.transaction() as conn:
        assert migrations.downgrade(conn, "0007_risk_alerts") == "0007_risk_alerts"
    assert "corporate_action_events" not in sa.inspect(store.engine).get_table_names()
    store.migrate()
    assert "corporate_action_events" in sa.inspect(store.engine).get_table_names()


# ---- wired: the order job applies due actions before it fills anything; the CLI by hand -------
def _cli(*args: str, code: int = 0):
    import json

    from typer.testing import CliRunner

    from trading_pipeline.cli.main import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if "--json" in args and code == 0 else res.output


def _ingest(tmp_path, name: str, rows: str) -> None:
    f = tmp_path / f"{name}.csv"
    f.write_text("Date,Open,High,Low,Close,Volume\n" + rows)
    _cli("ingest", str(f), "--json")


def test_the_order_job_applies_a_split_before_it_fills_and_the_cli_finds_nothing_left(trading_home, tmp_path) -> None:
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings
    from trading_pipeline.trading.store import OpsStore

    _ingest(tmp_path, "SPLT", "2013-02-27,99,101,98,100,1000\n2013-02-28,100,101,99,100,1000\n")
    placed = _cli("order", "submit", "SPLT", "buy", "10", "--json")  # works from the next bar: the ex-date's
    assert placed["order"]["status"] == "accepted", placed
    _ingest(tmp_path, "SPLT", "2013-03-01,50,51,49,50.5,2000\n")  # a 2-for-1 on 2013-03-01
    actions = tmp_path / "actions.csv"
    actions.write_text("symbol,ex_date,kind,ratio\nSPLT,2013-03-01,split,2\n")
    assert _cli("actions", "load", str(actions), "--json")["loaded"] == 1

    run = runs.run_job("trade_signals", get_settings())
    assert run.success, runs.failure_message(run)
    md = next(iter(run.get_asset_materialization_events())).materialization.metadata
    assert [(a["action"], a["orders_adjusted"]) for a in md["corporate_actions_applied"].value] == [
        ("SPLT:2013-03-01:split", 1)]
    assert [(e.check_name, e.passed) for e in run.get_asset_check_evaluations()] == [("reconciliation", True)]
    settings = get_settings()
    store = OpsStore.from_settings(settings)
    pos = store.portfolio(settings.account).positions["SPLT"]
    assert (pos.quantity, pos.avg_price) == (D(20), D(50))  # 10 pre-split shares became 20, filled at the 50 open

    out = _cli("actions", "apply", "--json")  # by hand, after the job: nothing new
    assert (out["as_of"], out["applied"], out["already_applied"]) == ("2013-03-01", [], 1)
    again = runs.run_job("trade_signals", get_settings())
    assert again.success
    assert not next(iter(again.get_asset_materialization_events())).materialization.metadata[
        "corporate_actions_applied"].value
    assert store.portfolio(settings.account).quantity("SPLT") == D(20)
    store.close()


def test_the_cli_applies_by_date_and_refuses_a_bad_date(trading_home, tmp_path) -> None:
    _ingest(tmp_path, "SPLT", "2013-02-27,99,101,98,100,1000\n2013-02-28,100,101,99,100,1000\n"
                              "2013-03-01,50,51,49,50.5,2000\n2013-03-04,50,51,49,50,1000\n")
    actions = tmp_path / "actions.csv"
    actions.write_text("symbol,ex_date,kind,amount,pay_date\nSPLT,2013-03-01,dividend,0.25,2013-03-04\n")
    _cli("actions", "load", str(actions), "--json")
    assert "not a date" in _cli("actions", "apply", "--as-of", "March 4", code=2)
    untouched = _cli("actions", "apply", "--as-of", "2013-03-04", "--json")
    assert (untouched["applied"], untouched["already_applied"]) == ([], 0)  # the account never traded SPLT
    _cli("order", "submit", "SPLT", "buy", "5", "--limit", "49", "--tif", "gtc", "--json")  # now it has
    early = _cli("actions", "apply", "--as-of", "2013-03-01", "--json")
    assert early["applied"] == [] and early["already_applied"] == 0  # not paid yet
    paid = _cli("actions", "apply", "--as-of", "2013-03-04", "--json")
    assert [(a["key"], D(a["cash_delta"])) for a in paid["applied"]] == [("SPLT:2013-03-01:dividend", 0)]  # nothing held
    assert "nothing new to apply" in _cli("actions", "apply", "--as-of", "2013-03-04")
