"""`trading rebalance`: a real TRADING_HOME, warehouse and ops store (risk.yaml's limits, the paper
broker); once through the installed `trading` entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from trading_pipeline.cli import orders_cmds, rebalance_cmd
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import get_settings

from .conftest import daily_bars

START = datetime(2024, 3, 4)


def _bars(settings) -> None:
    bars = daily_bars("GOOG", [(100, 101, 99, 100)] * 2, start=START).vstack(
        daily_bars("AAPL", [(50, 51, 49, 50)] * 2, start=START))
    with writer(settings.warehouse_path) as con:
        upsert_bars(con, "raw.bars_daily", bars.with_columns(pl.col("ts").dt.date().alias("session_date")), source="test")
        con.execute("CREATE SCHEMA IF NOT EXISTS marts")
        con.execute("CREATE TABLE marts.signals (symbol VARCHAR, timeframe VARCHAR, ts TIMESTAMP, session_date DATE, "
                    "kind VARCHAR, direction VARCHAR, score DOUBLE, scan VARCHAR)")
        rows = [("GOOG", date(2024, 3, 5), "long", 70.0), ("AAPL", date(2024, 3, 5), "long", 80.0),
                ("MSFT", date(2024, 3, 5), "short", 90.0), ("MSFT", date(2024, 3, 4), "long", 99.0)]
        for sym, day, direction, score in rows:
            con.execute("INSERT INTO marts.signals VALUES (?, '1d', ?, ?, 'crp', ?, ?, 'crp_daily')",
                        [sym, datetime.combine(day, datetime.min.time()), day, direction, score])


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_BROKER", "paper")
    for var in ("TRADING_OPS_URL", "TRADING_ACCOUNTS_FILE", "TRADING_RISK_FILE", "TRADING_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    _bars(settings)
    app = typer.Typer()
    orders_cmds.register(app)
    rebalance_cmd.register(app)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return json.loads(res.stdout) if "--json" in args and code in (0, 1) else res.output

    yield invoke, tmp_path
    get_settings.cache_clear()


def _targets(tmp_path, text: str):
    path = tmp_path / "targets.csv"
    path.write_text(text)
    return str(path)


def test_dry_run_then_send_then_rerun_sends_nothing(cli):
    invoke, tmp = cli
    path = _targets(tmp, "symbol,weight\nGOOG,0.2\nAAPL,0.2\n")
    dry = invoke("rebalance", "--targets", path, "--dry-run", "--json")
    # the paper account's 100,000: 20,000 each -> 200 GOOG at 100, 400 AAPL at 50
    assert [(o["symbol"], o["side"], o["quantity"]) for o in dry["orders"]] == [("AAPL", "buy", "400"), ("GOOG", "buy", "200")]
    assert dry["dry_run"] is True and "results" not in dry and Decimal(dry["equity"]) == 100000
    assert dry["session"] == "2024-03-05" and dry["account"] == get_settings().account
    assert invoke("orders", "--json") == []  # nothing sent
    table = invoke("rebalance", "--targets", path, "--dry-run")
    assert "dry run: nothing sent" in table and "GOOG" in table and "20.00%" in table
    sent = invoke("rebalance", "--targets", path, "--json")
    assert [r["action"] for r in sent["results"]] == ["submitted", "submitted"]
    assert [r["client_order_id"] for r in sent["results"]] == [o["client_order_id"] for o in dry["orders"]]
    again = invoke("rebalance", "--targets", path, "--json")
    assert again["orders"] == [] and again["results"] == []
    assert "2 working rebalance order(s) counted as filled" in again["notes"][0]
    assert len(invoke("orders", "--json")) == 2
    text = invoke("rebalance", "--targets", path)
    assert "nothing to trade" in text


def test_a_risk_denial_is_reported_with_its_rule_and_exits_1(cli):
    invoke, tmp = cli
    path = _targets(tmp, "GOOG,0.3\n")  # 30% of equity: risk.yaml's max_concentration_pct is 25
    out = invoke("rebalance", "--targets", path, "--json", code=1)
    assert out["results"][0]["action"] == "denied" and "max_concentration" in out["results"][0]["reason"]
    text = invoke("rebalance", "--targets", path, code=1)  # retried under -2, denied again
    assert "denied" in text and "-2" in text


def test_bad_input_exits_2_with_the_reason(cli, monkeypatch):
    invoke, tmp = cli
    out = invoke("rebalance", "--targets", _targets(tmp, "GOOG,0.7\nAAPL,0.4\n"), code=2)
    assert "weights sum to 1.1, above 1" in out
    out = invoke("rebalance", "--targets", _targets(tmp, "GOOG,0.2\nNOPE,0.1\n"), code=2)
    assert "no last close for NOPE" in out
    out = invoke("rebalance", "--targets", _targets(tmp, "GOOG,abc\n"), code=2)
    assert "line 1 (GOOG): weight must be a number" in out
    assert "give --targets FILE or --from-scan NAME" in invoke("rebalance", code=2)
    assert "--min-trade must be a number >= 0" in invoke("rebalance", "--targets", "x.csv", "--min-trade", "-1", code=2)
    assert "cannot read the targets file" in invoke("rebalance", "--targets", str(tmp / "none.csv"), code=2)
    accounts = tmp / "accounts.yaml"
    accounts.write_text("accounts:\n  paper: {starting_cash: 100000}\n")
    monkeypatch.setenv("TRADING_ACCOUNTS_FILE", str(accounts))
    get_settings.cache_clear()
    out = invoke("rebalance", "--targets", _targets(tmp, "GOOG,0.1\n"), "--account", "nobody", code=2)
    assert "no account 'nobody'" in out and "trading accounts" in out


def test_targets_from_a_scan_equal_weight_over_its_top_long_signals(cli):
    invoke, _tmp = cli
    out = invoke("rebalance", "--from-scan", "crp_daily", "--top", "2", "--dry-run", "--json")
    # the latest session's long signals: AAPL (80), GOOG (70); MSFT's is short (and its long is older)
    assert out["source"] == "scan 'crp_daily'"
    assert [(o["symbol"], o["target_weight"]) for o in out["orders"]] == [("AAPL", "0.5"), ("GOOG", "0.5")]
    # 50% at 100,000 each: exactly all the cash, so the buys are scaled below it
    assert out["buy_scale"] is not None
    assert "no long signals" in invoke("rebalance", "--from-scan", "nope", "--dry-run", code=2)


def test_rebalance_through_the_installed_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env.update(TRADING_HOME=str(tmp_path / "home"), TRADING_BROKER="paper")
    settings_env = dict(os.environ)
    os.environ["TRADING_HOME"] = env["TRADING_HOME"]
    try:
        get_settings.cache_clear()
        s = get_settings()
        s.ensure_dirs()
        _bars(s)
    finally:
        os.environ.clear()
        os.environ.update(settings_env)
        get_settings.cache_clear()
    path = _targets(tmp_path, "GOOG,0.1\n")
    trading = os.path.join(os.path.dirname(sys.executable), "trading")
    res = subprocess.run([trading, "rebalance", "--targets", path, "--dry-run", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert [(o["symbol"], o["side"], o["quantity"]) for o in body["orders"]] == [("GOOG", "buy", "100")]
    res = subprocess.run([trading, "rebalance", "--targets", _targets(tmp_path, "GOOG,2\n")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "weight must be between 0 and 1" in res.stdout + res.stderr


def test_targets_from_the_rules_files_rebalance_section(cli, monkeypatch):
    """Without --targets or --from-scan, `rebalance: {from_scan, top}` in the rules file decides."""
    from trading_pipeline.settings import PROJECT_DIR

    invoke, tmp = cli
    rules = tmp / "rules.yaml"
    base = (PROJECT_DIR / "rules.yaml").read_text()
    rules.write_text(base + "\nrebalance:\n  from_scan: crp_daily\n  top: 1\n")
    monkeypatch.setenv("TRADING_RULES_FILE", str(rules))
    get_settings.cache_clear()
    out = invoke("rebalance", "--dry-run", "--json")
    assert out["source"] == "scan 'crp_daily'"
    assert [(o["symbol"], o["target_weight"]) for o in out["orders"]] == [("AAPL", "1")]
    rules.write_text(base + "\nrebalance:\n  from_scan: nope\n")
    out = invoke("rebalance", "--dry-run", code=2)
    assert "rebalance: from_scan 'nope' is not a scan in this file" in out
    rules.write_text(base + "\nrebalance:\n  from_scan: crp_daily\n  top: 0\n")
    assert "rebalance: top must be >= 1" in invoke("rebalance", "--dry-run", code=2)
