"""`trading accounts` and the order commands with an accounts file: a real TRADING_HOME, warehouse
and ops store; the listing also through the installed `trading` entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from trading_pipeline.cli import accounts_cmd, orders_cmds
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import get_settings

from .conftest import daily_bars

ACCOUNTS = """
accounts:
  paper: {starting_cash: 100000}
  small:
    starting_cash: 20000
    scans: [crp_daily]
    risk: {max_order_notional: 500}
"""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS)
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_ACCOUNTS_FILE", str(path))
    monkeypatch.setenv("TRADING_BROKER", "paper")
    monkeypatch.delenv("TRADING_OPS_URL", raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    bars = daily_bars("GOOG", [(100, 101, 99, 100), (100, 101, 99, 100)], start=datetime(2024, 3, 4))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
    app = typer.Typer()
    orders_cmds.register(app)
    accounts_cmd.register(app)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return json.loads(res.stdout) if "--json" in args and code in (0, 1) else res.output

    yield invoke, path
    get_settings.cache_clear()


def test_orders_go_to_the_named_account_under_its_limits(cli):
    invoke, _path = cli
    assert invoke("order", "submit", "GOOG", "buy", "10", "--json")["order"]["account"] == "paper"  # TRADING_ACCOUNT
    denied = invoke("order", "submit", "GOOG", "buy", "10", "--account", "small", "--json", code=1)
    assert denied["action"] == "denied" and "max_order_notional" in denied["reason"]
    ok = invoke("order", "submit", "GOOG", "buy", "4", "-a", "small", "--json")
    assert ok["action"] == "submitted" and ok["order"]["account"] == "small"
    out = invoke("order", "submit", "GOOG", "buy", "1", "--account", "nobody", code=2)
    assert "no account 'nobody'" in out and "known: paper, small" in out and "trading accounts" in out
    listing = invoke("accounts", "--json")
    rows = {a["name"]: a for a in listing["accounts"]}
    assert Decimal(str(rows["small"]["cash"])) == 20000 and rows["small"]["open_orders"] == 1
    assert rows["small"]["risk_overrides"] == {"max_order_notional": 500} and rows["paper"]["scans"] == "all"
    assert Decimal(str(listing["total_equity"])) == 120000
    synced = invoke("order", "sync", "--json")  # every account
    assert {a["account"] for a in synced["accounts"]} == {"paper", "small"} and synced["mismatches"] == []
    text = invoke("portfolio")
    assert "total of 2 accounts: equity 120,000.00" in text


def test_a_broken_accounts_file_exits_2_with_the_reason(cli):
    invoke, path = cli
    path.write_text("accounts:\n  a: {broker: schwab}\n")
    out = invoke("accounts", code=2)
    assert "account 'a': broker: Input should be 'paper', 'alpaca' or 'ib'" in out and "accounts.example.yaml" in out
    out = invoke("order", "submit", "GOOG", "buy", "1", code=2)
    assert "broker: Input should be" in out


def test_trading_accounts_through_the_installed_command(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS)
    env = {**os.environ, "TRADING_HOME": str(tmp_path / "home"), "TRADING_ACCOUNTS_FILE": str(path)}
    trading = os.path.join(os.path.dirname(sys.executable), "trading")
    res = subprocess.run([trading, "accounts", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert [a["name"] for a in body["accounts"]] == ["paper", "small"] and body["source"] == str(path)
    assert all(a["cash"] is None for a in body["accounts"])  # no order yet: nothing in the ops store
    res = subprocess.run([trading, "accounts"], env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "max_order_notional=500" in res.stdout and "crp_daily" in res.stdout
