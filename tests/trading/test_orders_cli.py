"""The order commands end to end: real TRADING_HOME in a temp dir, real warehouse and ops store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from trading_pipeline.cli.orders_cmds import register
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import get_settings
from trading_pipeline.trading.orders import utcnow

from .conftest import daily_bars


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_BROKER", "paper")
    monkeypatch.delenv("TRADING_OPS_URL", raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    bars = daily_bars("GOOG", [(100, 101, 99, 100), (100, 101, 99, 100)], start=datetime(2024, 3, 4))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return json.loads(res.stdout) if "--json" in args else res.output

    yield invoke, settings
    get_settings.cache_clear()


def test_kill_switch_submit_cancel_sync_portfolio(cli) -> None:
    invoke, settings = cli
    assert invoke("kill-switch", "status", "--json")["active"] is False
    invoke("kill-switch", "on", "--reason", "maintenance")
    assert "ON" in invoke("kill-switch")
    blocked = invoke("order", "submit", "GOOG", "buy", "10", "--json", code=1)
    assert blocked["action"] == "denied" and "maintenance" in blocked["reason"]
    invoke("kill-switch", "off")

    ok = invoke("order", "submit", "goog", "buy", "10", "--json")
    assert ok["action"] == "submitted" and ok["order"]["status"] == "accepted"
    collared = invoke("order", "submit", "GOOG", "buy", "1", "--limit", "150", "--json", code=1)
    assert "price_collar" in collared["reason"]
    resting = invoke("order", "submit", "GOOG", "buy", "5", "--limit", "99", "--tif", "gtc", "--json")
    rid = resting["order"]["client_order_id"]
    assert invoke("order", "cancel", rid, "--json")["status"] == "cancelled"
    invoke("order", "submit", "GOOG", "hold", "1", code=2)
    invoke("order", "submit", "GOOG", "buy", "-1", code=2)

    listed = invoke("orders", "--json")
    assert sorted(o["status"] for o in listed) == ["accepted", "cancelled", "denied", "denied"]  # kill switch, collar
    assert [o["client_order_id"] for o in invoke("orders", "--status", "open", "--json")] == [ok["order"]["client_order_id"]]
    assert "orders (4)" in invoke("orders")

    # the market moves: a bar after the submit time lets the paper broker fill the order
    future = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    bar = daily_bars("GOOG", [(102, 103, 101, 102)], start=future)
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bar.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    synced = invoke("order", "sync", "--json")
    assert [o["status"] for o in synced["changed"]] == ["filled"] and synced["mismatches"] == []

    pf = invoke("portfolio", "--json")
    assert [a["account"] for a in pf] == ["paper"]
    pos = pf[0]["positions"]
    assert [(p["symbol"], Decimal(p["quantity"]), Decimal(p["avg_price"])) for p in pos] == [("GOOG", 10, 102)]
    assert Decimal(pf[0]["cash"]) == Decimal("98980")
    assert Decimal(pos[0]["unrealized_pnl"]) == 0
    assert "portfolio paper" in invoke("portfolio")


def test_order_submit_is_held_to_buying_power(cli, tmp_path, monkeypatch) -> None:
    """`trading order submit` goes through the same engine: working buys hold the cash."""
    invoke, settings = cli
    bars = daily_bars("MSFT", [(100, 101, 99, 100), (100, 101, 99, 100)], start=datetime(2024, 3, 4))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    risk = tmp_path / "risk.yaml"
    risk.write_text(
        "max_order_notional: 1000000\nmax_symbol_exposure: 1000000\nmax_total_exposure: 1000000\n"
        "max_concentration_pct: 100\nmax_position_quantity: 100000\nmax_leverage: 1\n"
    )
    monkeypatch.setenv("TRADING_RISK_FILE", str(risk))
    get_settings.cache_clear()
    assert invoke("order", "submit", "GOOG", "buy", "600", "--json")["action"] == "submitted"  # 60,000 of 100,000
    over = invoke("order", "submit", "MSFT", "buy", "400", "--json", code=1)  # + 40,000: at the cash
    assert over["action"] == "denied" and over["reason"].startswith("buying_power: buy 400 MSFT needs 40,000.00")
    assert "60,000.00 held by working orders" in over["reason"] and "reaching buying power 100,000.00" in over["reason"]
    assert invoke("order", "submit", "MSFT", "buy", "399", "--json")["action"] == "submitted"
    # selling what the working buys will hold needs no buying power; selling past it opens a short, which does
    assert invoke("order", "submit", "GOOG", "sell", "601", "--json", code=1)["reason"].startswith("buying_power: sell 601 GOOG (opening 1)")
    assert invoke("order", "submit", "GOOG", "sell", "600", "--json")["action"] == "submitted"
    denied = invoke("orders", "--status", "denied", "--json")
    assert len(denied) == 2 and all(o["reason"].startswith("risk rule buying_power") for o in denied)
    assert invoke("orders", "--status", "rejected", "--json") == []  # no broker refused anything


@pytest.mark.parametrize("clock, fills", [("auto", True), ("market", True), ("wall", False)])
def test_manual_order_on_a_historical_market_fills_at_the_next_stored_bar(cli, monkeypatch, clock, fills) -> None:
    """Issue 20.6: on the sample market (or any file-loaded history) a manual order was stamped
    with today's wall clock, so no stored bar was ever after it and it never filled. The paper
    broker's clock is the market's: the newest stored bar (TRADING_CLOCK=auto or market)."""
    invoke, settings = cli
    monkeypatch.setenv("TRADING_CLOCK", clock)
    get_settings.cache_clear()
    placed = invoke("order", "submit", "GOOG", "buy", "10", "--json")
    assert placed["order"]["status"] == "accepted"
    assert invoke("order", "sync", "--json")["changed"] == []  # no bar after the last one yet
    # the next session arrives (2024-03-06: years before today's date)
    bar = daily_bars("GOOG", [(104, 106, 103, 105)], start=datetime(2024, 3, 6))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bar.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    synced = invoke("order", "sync", "--json")
    if fills:
        [order] = synced["changed"]
        assert order["status"] == "filled" and Decimal(str(order["avg_fill_price"])) == Decimal("104")
    else:  # the wall clock puts the order after every stored bar: it waits
        assert synced["changed"] == []


def test_order_submit_stop_types_and_bad_terms_exit_2(cli) -> None:
    invoke, settings = cli
    stop = invoke("order", "submit", "GOOG", "buy", "1", "--type", "stop", "--stop-price", "102", "--tif", "gtc", "--json")
    assert stop["action"] == "submitted"
    assert (stop["order"]["order_type"], stop["order"]["stop_price"], stop["order"]["time_in_force"]) == ("stop", "102", "gtc")
    sl = invoke("order", "submit", "GOOG", "sell", "1", "--type", "stop-limit", "--stop-price", "98", "--limit", "97.5", "--json")
    assert (sl["order"]["order_type"], sl["order"]["stop_price"], sl["order"]["limit_price"]) == ("stop_limit", "98", "97.5")
    tr = invoke("order", "submit", "GOOG", "sell", "1", "--type", "trailing-stop", "--trail-percent", "3", "--json")
    assert (tr["order"]["order_type"], tr["order"]["trail_percent"], tr["order"]["trail_amount"]) == ("trailing_stop", "3", None)
    opg = invoke("order", "submit", "GOOG", "buy", "1", "--tif", "opg", "--json")
    assert (opg["order"]["order_type"], opg["order"]["time_in_force"]) == ("market", "opg")
    bad = [
        (("--type", "stop"), "needs a positive --stop-price"),
        (("--type", "stop-limit", "--stop-price", "102"), "needs a positive --limit"),
        (("--type", "stop", "--stop-price", "102", "--limit", "103"), "has no --limit"),
        (("--type", "trailing-stop", "--trail-percent", "1", "--trail-amount", "1"), "exactly one of"),
        (("--type", "trailing-stop", "--trail-amount", "0"), "--trail-amount must be > 0"),
        (("--type", "stop", "--stop-price", "100"), "buy stop must be above the market"),  # the last close is 100
        (("--type", "stop", "--stop-price", "102", "--tif", "ioc"), "day or gtc"),
        (("--type", "oco",), "--type must be"),
        (("--tif", "fok",), "--tif must be"),
        (("--stop-price", "102",), "a market order has no --stop-price"),
    ]
    for args, message in bad:
        out = invoke("order", "submit", "GOOG", "buy", "1", *args, code=2)
        assert message in " ".join(out.split()), (args, out)
    store_orders = invoke("orders", "--json")
    assert len(store_orders) == 4  # nothing stored for the bad ones


def test_order_modify_and_its_refusals(cli) -> None:
    invoke, settings = cli
    placed = invoke("order", "submit", "GOOG", "sell", "2", "--type", "stop", "--stop-price", "98", "--tif", "gtc", "--json")
    coid = placed["order"]["client_order_id"]
    modified = invoke("order", "modify", coid, "--quantity", "3", "--stop-price", "97", "--json")
    assert modified["action"] == "modified"
    assert (modified["order"]["quantity"], modified["order"]["stop_price"]) == ("3", "97")
    [listed] = invoke("orders", "--json")
    assert (listed["quantity"], listed["stop_price"]) == ("3", "97")
    bad = [
        ((coid, "--limit", "96"), 2, "a stop order has no --limit"),
        ((coid, "--stop-price", "101"), 2, "sell stop must be below the market"),  # the last close is 100
        ((coid,), 2, "at least one of"),
        ((coid, "--trail-percent", "1", "--trail-amount", "1"), 2, "not both"),
        ((coid, "--quantity", "-1"), 2, "--quantity must be > 0"),
        (("tp-nope", "--quantity", "1"), 2, "no order 'tp-nope'"),
        ((coid, "--quantity", "1000"), 1, "max_order_notional"),  # risk denies: exit 1, as for a new order
    ]
    for args, code, message in bad:
        out = invoke("order", "modify", *args, code=code)
        assert message in " ".join(out.split()), (args, out)
    assert invoke("orders", "--json") == [listed]  # unchanged by every refusal
    invoke("order", "cancel", coid)
    out = invoke("order", "modify", coid, "--quantity", "4", code=2)
    assert "cannot modify, it is cancelled" in out
