"""The broker goes away in the middle of an order batch; the next order run restores the book.

A real `trade_signals` run against Alpaca's REST shape (the local stub, reached by the real
alpaca-py client through TRADING_ALPACA_URL_OVERRIDE): the stub answers the first requests,
then drops every connection. Orders recorded before the outage stay in the ops store with the
error noted; the next run (broker back) asks the broker by client order id, submits what it
never received, and the reconciliation check passes: every order reached the broker once.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from tests.scans.runs import scan_daily
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline import runs
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings

pytestmark = [pytest.mark.timeout(400)]
SRC = {"source": "sample", "synthetic_symbols": 20}  # two CRP buys on 2013-02-22 (SYN0010, SYN0015)


def test_broker_outage_mid_batch_then_reconciled(trading_home, monkeypatch):
    scan_daily(SRC, date(2012, 9, 3), date(2013, 2, 22))
    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        closes = warehouse.fetch_frame(con, "SELECT symbol, arg_max(close, ts) AS c FROM raw.bars_daily GROUP BY 1")
        tradeable = warehouse.fetch_one(con, """SELECT count(*) FROM marts.signals WHERE session_date = '2013-02-22'
            AND timeframe = '1d' AND kind IN ('breakout_up', 'crp_long')""")[0]
    finally:
        con.close()
    assert tradeable >= 2, "the scenario needs a batch of at least two buy signals"

    with AlpacaStub() as stub:
        for sym, c in closes.iter_rows():
            stub.set_price(sym, round(c, 2))
        monkeypatch.setenv("TRADING_BROKER", "alpaca")
        monkeypatch.setenv("TRADING_ALPACA_URL_OVERRIDE", stub.url)
        monkeypatch.setenv("TRADING_ALPACA_API_KEY", stub.api_key)
        monkeypatch.setenv("TRADING_ALPACA_SECRET_KEY", stub.secret_key)
        get_settings.cache_clear()

        # account + first order's lookup and submit go through; then the broker is gone
        stub.pass_next(3)
        stub.drop_next(100_000)
        first = runs.run_job("trade_signals", get_settings())
        from trading_pipeline.trading.store import OpsStore

        store = OpsStore.from_settings(get_settings())
        recorded = store.list_orders(limit=1000)
        assert len(recorded) >= 2
        stuck = [o for o in recorded if o.status.value == "new"]
        assert stuck, "some orders must be waiting for the broker after the outage"
        assert not first.success or not all(e.passed for e in first.get_asset_check_evaluations())
        assert len(stub.orders) < len(recorded)

        stub._faults.clear()  # the broker is back
        second = runs.run_job("trade_signals", get_settings())
        assert second.success, runs.failure_message(second)
        assert [(e.check_name, e.passed) for e in second.get_asset_check_evaluations()] == [("reconciliation", True)]
        after = OpsStore.from_settings(get_settings()).list_orders(limit=1000)
        assert {o.client_order_id for o in after} == {o.client_order_id for o in recorded}  # nothing lost
        assert not [o for o in after if o.status.value == "new"]
        at_broker = Counter(o.client_order_id for o in stub.orders.values())
        sent = {o.client_order_id for o in after if o.status.value != "rejected"}
        assert set(at_broker) == sent and set(at_broker.values()) == {1}  # each exactly once
    get_settings.cache_clear()
