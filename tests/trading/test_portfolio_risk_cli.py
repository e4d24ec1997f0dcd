"""`trading risk`: a real TRADING_HOME (warehouse with small bars, ops store with booked fills),
through CliRunner and once through the installed `trading` entry point."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from tests.trading.test_portfolio_risk import _stress_closes
from trading_pipeline.cli import risk_cmd
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import get_settings
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.store import OpsStore

# SPY and AAA from 2019-01-02 to 2020-06-30 (covering the 2020 window), BBB from 2020-04-01 at 2 x SPY's returns
HOLDINGS = {"paper": {"AAA": 10, "BBB": -5}, "second": {"AAA": 4}}


def write_bars(warehouse_path, closes: pl.DataFrame | None = None) -> dict[str, float]:
    """The closes as daily bars in the warehouse; returns each symbol's last close."""
    closes = closes if closes is not None else _stress_closes()[0]
    bars = closes.with_columns(
        pl.lit("1d").alias("timeframe"),
        pl.col("session_date").cast(pl.Datetime("us")).alias("ts"),
        pl.col("close").alias("open"), pl.col("close").alias("high"), pl.col("close").alias("low"),
        pl.lit(1000.0).alias("volume"),
    ).select("symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume")
    with writer(warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars, source="test")
    return {s: float(g.sort("session_date")["close"][-1]) for (s,), g in closes.partition_by("symbol", as_dict=True).items()}


def book_positions(store_url: str, holdings: dict[str, dict[str, int]] = HOLDINGS, cash: str = "100000") -> None:
    """Positions booked the way broker fills are (order + fill through the store)."""
    store = OpsStore(store_url)
    try:
        ts = datetime(2020, 6, 30, 16)
        for account, positions in holdings.items():
            store.ensure_account(account, Decimal(cash))
            for i, (symbol, qty) in enumerate(sorted(positions.items())):
                side = Side.BUY if qty > 0 else Side.SELL
                coid = f"{account}-{symbol}-{i}"
                q = Decimal(abs(qty))
                store.insert_order(Order(coid, account, symbol, side, q))
                fill = BrokerFill(f"{coid}-f", coid, q, Decimal("10"), Decimal(0), ts + timedelta(minutes=i))
                store.sync_from_broker(coid, BrokerOrder(coid, f"b-{coid}", symbol, side, q, q, OrderStatus.FILLED,
                                                         Decimal("10"), fills=(fill,)))
    finally:
        store.close()


@pytest.fixture
def risk_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    for var in ("TRADING_ACCOUNTS_FILE", "TRADING_OPS_URL", "TRADING_WAREHOUSE", "TRADING_RISK_BENCHMARK",
                "TRADING_SCENARIOS_FILE", "TRADING_RISK_WINDOW", "TRADING_RISK_HORIZON"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_ACCOUNT", "paper")
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    yield settings
    get_settings.cache_clear()


@pytest.fixture
def invoke():
    app = typer.Typer()
    risk_cmd.register(app)
    app.command("noop")(lambda: None)  # two commands: `risk` stays a subcommand
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        get_settings.cache_clear()
        res = runner.invoke(app, ["risk", *args])
        assert res.exit_code == code, (res.stdout, res.stderr)
        return res

    return run


def test_risk_json_per_account_and_total(risk_home, invoke, tmp_path, monkeypatch) -> None:
    last = write_bars(risk_home.warehouse_path)
    book_positions(risk_home.ops_store_url)
    scen = tmp_path / "scen.yaml"
    scen.write_text("hypothetical:\n  - {name: all -10%, shocks: {all: -10%}}\n")
    monkeypatch.setenv("TRADING_SCENARIOS_FILE", str(scen))
    out = json.loads(invoke("--window", "40", "--horizon", "4", "--json").stdout)
    assert out["benchmark"] == "SPY" and out["window"] == 40 and out["horizon_days"] == 4
    accts = {a["account"]: a for a in out["accounts"]}
    assert set(accts) == {"paper", "second"}
    paper = accts["paper"]
    for key in ("var_95", "es_95", "var_99", "es_99"):
        assert paper[key] is not None and paper["horizon"][key] == pytest.approx(paper[key] * 2)
    assert paper["exposure"]["long"] == pytest.approx(10 * last["AAA"])
    assert paper["exposure"]["short"] == pytest.approx(5 * last["BBB"])
    names = [s["name"] for s in paper["scenarios"]]
    assert names == ["2008 Lehman", "2020 Covid crash", "2022 drawdown", "all -10%"]
    covid = paper["scenarios"][1]
    assert covid["sources"] == {"own": ["AAA"], "benchmark_beta": ["BBB"]}
    assert covid["pnl"] == pytest.approx(10 * last["AAA"] * -0.2 + -5 * last["BBB"] * 2 * -0.3)
    assert covid["worst_symbol"] == "AAA"
    shock = out["total"]["scenarios"][3]
    assert out["total"]["account"] == "total"
    assert shock["pnl"] == pytest.approx(-0.1 * (14 * last["AAA"] - 5 * last["BBB"]))
    # one account
    one = json.loads(invoke("--account", "second", "--window", "40", "--json").stdout)
    assert [a["account"] for a in one["accounts"]] == ["second"]
    assert one["total"]["var_99"] == pytest.approx(one["accounts"][0]["var_99"])
    assert one["horizon_days"] == 10 and one["accounts"][0]["horizon"]["var_95"] == pytest.approx(
        one["accounts"][0]["var_95"] * math.sqrt(10))
    text = invoke("--window", "40").stdout
    assert "VaR 95" in text and "2020 Covid crash" in text and "total" in text


def test_risk_errors(risk_home, invoke, tmp_path, monkeypatch) -> None:
    # nothing held, no warehouse: zeros, exit 0
    out = json.loads(invoke("--json").stdout)
    assert out["total"]["var_95"] == 0 and out["total"]["positions"] == []
    assert "no open positions" in invoke().stdout
    res = invoke("--account", "nobody", code=2)
    assert "no account 'nobody'" in res.stderr and "trading accounts" in res.stderr
    book_positions(risk_home.ops_store_url)
    res = invoke(code=2)
    assert "no warehouse" in res.stderr
    write_bars(risk_home.warehouse_path)
    res = invoke(code=2)  # default window: 250 returns, BBB has 65 sessions
    assert "not enough history for a 250-session window" in res.stderr and "BBB 65" in res.stderr
    assert "AAA 390" in res.stderr and "--window" in res.stderr
    res = invoke("--account", "second")  # AAA alone has enough
    assert "error" not in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("hypothetical:\n  - {name: x, shocks: {GOOG: lots}}\n")
    monkeypatch.setenv("TRADING_SCENARIOS_FILE", str(bad))
    res = invoke("--window", "40", code=2)
    assert str(bad) in res.stderr and "hypothetical[0].shocks.GOOG" in res.stderr


def test_risk_through_the_installed_command(tmp_path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env.update(TRADING_HOME=str(home), TRADING_RISK_WINDOW="40", TRADING_RISK_BENCHMARK="SPY")
    settings = __import__("trading_pipeline.settings", fromlist=["Settings"]).Settings(home=home)
    settings.ensure_dirs()
    write_bars(settings.warehouse_path)
    book_positions(settings.ops_store_url, {"paper": {"AAA": 10}})
    trading = os.path.join(os.path.dirname(sys.executable), "trading")
    res = subprocess.run([trading, "risk", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["window"] == 40 and body["total"]["var_95"] > 0 and body["total"]["positions"][0]["symbol"] == "AAA"
    res = subprocess.run([trading, "risk", "--account", "ghost"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no account 'ghost'" in res.stderr
    assert Path(settings.warehouse_path).exists() or str(settings.warehouse_path).startswith("ducklake:")
