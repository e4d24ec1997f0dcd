"""marts/portfolio_risk in real Dagster runs (trading_pipeline.runs.run_job): one row per account and
session plus the total, replaced on re-run, the same figures as `trading risk`."""

from __future__ import annotations

import json

import pytest

from tests.trading.test_portfolio_risk_cli import book_positions, write_bars
from trading_pipeline import runs
from trading_pipeline.definitions import defs
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import get_settings
from trading_pipeline.trading import portfolio_risk as pr
from trading_pipeline.trading.store import OpsStore


def _rows(settings) -> list[dict]:
    con = wh.connect(settings.warehouse_path, read_only=True)
    try:
        return wh.fetch_frame(con, "SELECT * FROM marts.portfolio_risk ORDER BY session_date, account").to_dicts()
    finally:
        con.close()


@pytest.fixture
def home(trading_home, monkeypatch):
    monkeypatch.setenv("TRADING_RISK_WINDOW", "40")
    monkeypatch.setenv("TRADING_RISK_HORIZON", "4")
    for var in ("TRADING_ACCOUNTS_FILE", "TRADING_OPS_URL", "TRADING_RISK_BENCHMARK", "TRADING_SCENARIOS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRADING_ACCOUNT", "paper")
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    write_bars(settings.warehouse_path)
    book_positions(settings.ops_store_url)
    return settings


def test_the_asset_writes_one_row_per_account_and_session(home) -> None:
    assert "orders_to_portfolio_risk" in {s.name for s in defs().sensors}
    res = runs.run_job("portfolio_risk", home)
    assert res.success
    rows = _rows(home)
    assert [(str(r["session_date"]), r["account"]) for r in rows] == [
        ("2020-06-30", "(total)"), ("2020-06-30", "paper"), ("2020-06-30", "second")]
    by = {r["account"]: r for r in rows}
    store = OpsStore(home.ops_store_url)
    try:
        books = [pr.book_of(store.portfolio(a)) for a in ("paper", "second")]
    finally:
        store.close()
    con = wh.connect(home.warehouse_path, read_only=True)
    try:
        expected = pr.assess_books(con, books, window=40, horizon=4)
    finally:
        con.close()
    paper = expected["accounts"][0]
    assert by["paper"]["var_99"] == pytest.approx(paper["var_99"]) and by["paper"]["es_95"] == pytest.approx(paper["es_95"])
    assert by["paper"]["var_99_horizon"] == pytest.approx(paper["var_99"] * 2)
    assert by["(total)"]["var_95"] == pytest.approx(expected["total"]["var_95"])
    assert by["paper"]["benchmark"] == "SPY" and by["paper"]["positions"] == 2 and by["paper"]["window_sessions"] == 40
    assert by["paper"]["worst_scenario"] == "2020 Covid crash"
    scen = json.loads(by["paper"]["scenarios"])
    assert [s["name"] for s in scen] == ["2008 Lehman", "2020 Covid crash", "2022 drawdown"]
    assert scen[1]["sources"] == {"own": ["AAA"], "benchmark_beta": ["BBB"]}

    # a re-run replaces the session's rows; another session adds its own
    assert runs.run_job("portfolio_risk", home).success
    assert len(_rows(home)) == 3
    cfg = {"ops": {"marts__portfolio_risk": {"config": {"session": "2020-06-01", "window": 200}}}}
    assert runs.run_job("portfolio_risk", home, run_config=cfg).success
    rows = _rows(home)
    assert len(rows) == 6
    old = {r["account"]: r for r in rows if str(r["session_date"]) == "2020-06-01"}
    assert str(old["second"]["as_of"]) == "2020-06-01" and old["second"]["var_95"] is not None
    assert "not enough history" in old["paper"]["error"] and old["paper"]["var_95"] is None  # BBB: 44 sessions
