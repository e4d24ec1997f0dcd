"""Risk monitoring over the API: GET /risk shows the warnings an account is at now, GET
/risk/alerts lists the recorded ones (catch-up by id), and a real WebSocket client on the
``alerts`` channel gets each recorded alert pushed live."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi.testclient import TestClient

from tests.api.support import ApiEnv, Server, frames, subscribe
from trading_api.main import create_app
from trading_pipeline.trading.model import Side
from trading_pipeline.trading.orders import Order, utcnow
from trading_pipeline.trading.risk_monitor import monitor_accounts
from trading_pipeline.trading.store import OpsStore

pytestmark = [pytest.mark.timeout(120)]

RISK = (
    "max_order_notional: 1000000\nmax_symbol_exposure: 1000000\nmax_total_exposure: 1000000\n"
    "max_concentration_pct: 100\nmax_position_quantity: 100000\nprice_collar_pct: 50\n"
    "max_open_orders: 4\nwarn_at_pct: 50\n"
)


def _risk_file(tmp_path: Path) -> Path:
    path = tmp_path / "risk.yaml"
    path.write_text(RISK)
    return path


def _monitor(api_env: ApiEnv, risk: Path) -> list:
    """What the order job does after marking the close: evaluate and record every account."""
    store = OpsStore(api_env.store_url)
    try:
        return monitor_accounts(api_env.settings.model_copy(update={"risk_file": risk}), store, {}, utcnow())
    finally:
        store.close()


def test_get_risk_alerts_now_and_the_recorded_ones(api_env: ApiEnv, tmp_path: Path) -> None:
    risk = _risk_file(tmp_path)
    app = create_app(api_env.settings.model_copy(update={"risk_file": risk}), poll_interval=0.05, heartbeat=1.0)
    with TestClient(app) as c:
        c.headers.update(api_env.headers())
        assert c.get("/risk").json()["alerts"] == []
        for i in range(2):  # two working orders: 50% of max_open_orders 4
            r = c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1"}, headers={"Idempotency-Key": f"k{i}"})
            assert r.status_code == 201, r.text
        body = c.get("/risk").json()
        assert Decimal(body["limits"]["warn_at_pct"]) == 50 and "drawdown_warn_pct" not in body["limits"]
        [now] = body["alerts"]
        assert (now["account"], now["kind"], now["level"]) == ("paper", "limit_usage:max_open_orders", "warning")
        assert (Decimal(now["value"]), Decimal(now["limit"])) == (2, 4)
        assert now["message"] == "paper: working orders 2 is 50.0% of max_open_orders 4 (warning at 50%)"
        assert c.get("/risk", params={"account": "other"}).json()["alerts"] == []
        # GET /risk evaluates; only the order job's monitor records
        assert c.get("/risk/alerts").json() == {"alerts": [], "last_id": 0}
        [recorded] = _monitor(api_env, risk)
        got = c.get("/risk/alerts").json()
        assert got["last_id"] == recorded.id and [a["id"] for a in got["alerts"]] == [recorded.id]
        a = got["alerts"][0]
        assert (a["source"], a["kind"], a["level"], a["account"]) == ("risk", "limit_usage:max_open_orders", "warning", "paper")
        assert a["message"] == now["message"] and a["delivered_at"] is None and a["attempts"] == 0
        assert c.get("/risk/alerts", params={"since_id": recorded.id}).json()["alerts"] == []
        assert c.get("/risk/alerts", params={"account": "other"}).json()["alerts"] == []
        assert c.get("/risk/alerts", params={"since_id": -1}).status_code == 422
        assert _monitor(api_env, risk) == []  # once per session


@pytest.mark.e2e
def test_recorded_risk_alerts_are_pushed_on_the_alerts_channel(api_env: ApiEnv, tmp_path: Path) -> None:
    risk = _risk_file(tmp_path)
    server = Server(api_env, extra_env={"TRADING_RISK_FILE": str(risk)})
    try:
        async def scenario() -> None:
            async with websockets.connect(f"{server.ws_url}/ws?api_key={api_env.key}") as ws:
                sub, _ = await subscribe(ws, ["alerts"])
                assert sub["risk_alerts_head"] == 0
                async with httpx.AsyncClient(base_url=server.url, headers=api_env.headers(), timeout=10) as c:
                    for _ in range(2):
                        r = await c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1"})
                        assert r.status_code == 201, r.text
                    [warning] = await asyncio.to_thread(_monitor, api_env, risk)
                    got = await frames(ws, "risk_alert", 8, lambda out: bool(out))
                    assert [m["alert_id"] for m in got] == [warning.id]
                    m = got[0]
                    assert (m["channel"], m["source"]) == ("alerts", "risk")
                    assert m["data"]["kind"] == "limit_usage:max_open_orders" and m["data"]["level"] == "warning"
                    assert m["data"]["message"] == warning.message and m["data"]["source"] == "risk"
                    for _ in range(2):  # four working: the limit is reached, a breach
                        assert (await c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1"})).status_code == 201
                    [breach] = await asyncio.to_thread(_monitor, api_env, risk)
                    got = await frames(ws, "risk_alert", 8, lambda out: bool(out))
                    assert [(x["alert_id"], x["data"]["level"]) for x in got] == [(breach.id, "breach")]
                    # a client that was away catches up by id over REST
                    caught = (await c.get("/risk/alerts", params={"since_id": warning.id})).json()
                    assert [a["id"] for a in caught["alerts"]] == [breach.id] and caught["last_id"] == breach.id
                assert not await frames(ws, "risk_alert", 1.0)  # nothing pushed twice

        asyncio.run(scenario())
    finally:
        server.stop()


def test_trading_status_shows_the_recorded_alerts(api_env: ApiEnv, tmp_path: Path) -> None:
    risk = _risk_file(tmp_path)
    store = OpsStore(api_env.store_url)
    try:
        store.ensure_account("paper", Decimal(100000))
        for i in range(4):  # four working orders: max_open_orders 4 is reached
            store.insert_order(Order(f"w{i}", "paper", "GOOG", Side.BUY, Decimal(1)))
    finally:
        store.close()
    [breach] = _monitor(api_env, risk)
    cmd = [sys.executable, "-m", "trading_pipeline.cli.main", "status"]
    env = {**api_env.environ(), "COLUMNS": "200"}
    out = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    [shown] = json.loads(out.stdout)["risk_alerts"]
    assert shown == {**breach.public(), "delivered": False}
    assert shown["level"] == "breach" and shown["message"].startswith("paper: working orders 4 reaches max_open_orders 4")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "risk alerts" in out.stdout and "working orders 4 reaches max_open_orders 4" in out.stdout
    assert "breach" in out.stdout


def test_get_risk_var_budget_uses_the_snapshots_daily_closes(api_env: ApiEnv, tmp_path: Path) -> None:
    from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
    from trading_pipeline.trading.model import OrderStatus

    risk = tmp_path / "risk.yaml"
    risk.write_text("var_budget: 0.01\nmax_total_exposure: 100000000\nmax_symbol_exposure: 100000000\n"
                    "max_concentration_pct: 100\n")
    store = OpsStore(api_env.store_url)
    try:
        store.ensure_account("paper", Decimal(100000))
        # short 10 GOOG: the test bars only rise, so every day of the window is a loss (a long's VaR
        # would be negative: even its worst day gained)
        store.insert_order(Order("b1", "paper", "GOOG", Side.SELL, Decimal(10)))
        f = BrokerFill("b1-f", "b1", Decimal(10), Decimal(100), Decimal(0), utcnow())
        store.sync_from_broker("b1", BrokerOrder("b1", "p-b1", "GOOG", Side.SELL, Decimal(10), Decimal(10),
                                                 OrderStatus.FILLED, Decimal(100), fills=(f,)))
    finally:
        store.close()
    settings = api_env.settings.model_copy(update={"risk_file": risk, "risk_window": 20})
    with TestClient(create_app(settings, poll_interval=0.05, heartbeat=1.0)) as c:
        c.headers.update(api_env.headers())
        [var] = c.get("/risk").json()["alerts"]
        assert var["kind"] == "var" and Decimal(var["value"]) > Decimal("0.01") and Decimal(var["limit"]) == Decimal("0.01")
        assert var["message"].startswith("paper: 1-day 95% VaR ")
        risk.write_text("var_budget: 1000000\nmax_total_exposure: 100000000\nmax_symbol_exposure: 100000000\n"
                        "max_concentration_pct: 100\n")
        assert c.get("/risk").json()["alerts"] == []
