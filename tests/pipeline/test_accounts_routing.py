"""Several accounts in a real `trade_signals` run: the sensor's order job routes each scan's
signals to the accounts that take that scan, each at its own broker (paper, and Alpaca's REST
shape through the local stub) and under its own risk limits; reconciliation runs per account;
one account's broker being down fails the run by name while the others trade."""

from __future__ import annotations

from datetime import date

import pytest

from tests.scans.runs import scan_daily
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings
from trading_pipeline.trading.store import OpsStore

pytestmark = [pytest.mark.timeout(600)]
SRC = {"source": "sample", "synthetic_symbols": 20}  # CRP buys on 2013-02-22 (crp_daily)
TRADE_DAY = date(2013, 2, 22)

ACCOUNTS = """
accounts:
  paper: {}
  crp-small:
    starting_cash: 30000
    scans: [crp_daily]
    risk: {max_order_notional: 100}
  manual-only:
    scans: []
  live:
    broker: alpaca
    scans: [crp_daily]
    alpaca: {api_key_env: TEST_LIVE_KEY, secret_key_env: TEST_LIVE_SECRET, url_override: URL}
"""


def test_signals_are_routed_to_accounts_by_scan_with_their_own_broker_and_limits(trading_home, monkeypatch, tmp_path):
    scan_daily(SRC, date(2012, 9, 3), TRADE_DAY)
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        closes = warehouse.fetch_frame(con, "SELECT symbol, arg_max(close, ts) AS c FROM raw.bars_daily GROUP BY 1")
        by_scan = dict(warehouse.fetch_frame(con, """SELECT scan, count(*) FROM marts.signals
            WHERE session_date = ?::DATE AND timeframe = '1d' AND kind IN ('breakout_up', 'crp_long')
            GROUP BY 1""", [TRADE_DAY.isoformat()]).iter_rows())
    finally:
        con.close()
    assert by_scan.get("crp_daily", 0) >= 2, by_scan

    with AlpacaStub() as stub:
        for sym, c in closes.iter_rows():
            stub.set_price(sym, round(c, 2))
        path = tmp_path / "accounts.yaml"
        path.write_text(ACCOUNTS.replace("URL", stub.url))
        monkeypatch.setenv("TRADING_ACCOUNTS_FILE", str(path))
        monkeypatch.setenv("TEST_LIVE_KEY", stub.api_key)
        monkeypatch.setenv("TEST_LIVE_SECRET", stub.secret_key)
        get_settings.cache_clear()

        r = runs.run_job("trade_signals", get_settings())
        assert r.success, runs.failure_message(r)
        assert [(e.check_name, e.passed) for e in r.get_asset_check_evaluations()] == [("reconciliation", True)]
        meta = next(m for m in r.get_asset_materialization_events()).materialization.metadata["accounts"].value
        assert meta["manual-only"] == {"scans": [], "orders": 0}
        assert meta["crp-small"]["scans"] == ["crp_daily"] and meta["live"]["scans"] == ["crp_daily"]
        assert sorted(meta["paper"]["scans"]) == sorted(by_scan)

        store = OpsStore.from_settings(get_settings())
        orders = {a: store.list_orders(account=a, limit=1000) for a in ("paper", "crp-small", "manual-only", "live")}
        crp_paper = [o for o in orders["paper"] if o.strategy == "crp_daily"]
        assert len(crp_paper) == by_scan["crp_daily"] and len(orders["paper"]) == sum(by_scan.values())
        assert orders["manual-only"] == []
        # the same signals, each account's own ids; crp-small's 100 notional denies every one
        assert {o.symbol for o in orders["crp-small"]} == {o.symbol for o in crp_paper}
        assert {o.status.value for o in orders["crp-small"]} == {"denied"}
        assert {e.rule for e in store.list_risk_events(account="crp-small")} == {"max_order_notional"}
        assert not store.list_risk_events(account="paper")
        # the live account's orders reached Alpaca (the stub) once each; paper's never did
        at_stub = sorted(o.client_order_id for o in stub.orders.values())
        assert at_stub == sorted(o.client_order_id for o in orders["live"]) and len(at_stub) == by_scan["crp_daily"]
        assert all(o.broker == "alpaca" for o in orders["live"]) and all(o.broker == "paper" for o in orders["paper"])
        assert store.portfolio("crp-small").starting_cash == 30000

        # the live account's keys are gone: the run fails naming it; the paper accounts still run
        monkeypatch.delenv("TEST_LIVE_KEY")
        get_settings.cache_clear()
        again = runs.run_job("trade_signals", get_settings())
        assert not again.success
        message = runs.failure_message(again)
        assert "broker error in account(s) live" in message and "TEST_LIVE_KEY" in message
        assert len(store.list_orders(account="paper", limit=1000)) == len(orders["paper"])  # idempotent: nothing twice
    get_settings.cache_clear()
