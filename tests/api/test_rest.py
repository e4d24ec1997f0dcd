"""REST routes against the real app over a real snapshot and a real SQLite ops store."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import polars as pl
import pytest
from fastapi.testclient import TestClient

from tests.api.support import START, ApiEnv
from trading_api.keys import create_key, revoke_key
from trading_api.main import create_app
from trading_pipeline.trading.store import OpsStore

PROTECTED = [
    "/signals", "/market-data", "/market-data/GOOG", "/scans", "/scans/crp_daily:1d:2024-02-10", "/alerts",
    "/orders", "/positions", "/portfolio", "/risk",
]


# ---- auth ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PROTECTED)
def test_every_route_but_health_needs_a_key(client: TestClient, api_env: ApiEnv, path: str) -> None:
    assert client.get(path, headers={"X-API-Key": ""}).status_code == 401
    r = client.get(path, headers={"X-API-Key": "trd_not-a-real-key"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get(path).status_code == 200
    assert client.get(path, headers={"X-API-Key": "", "Authorization": f"Bearer {api_env.key}"}).status_code == 200


def test_post_and_delete_need_a_key_too(client: TestClient) -> None:
    h = {"X-API-Key": ""}
    assert client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": 1}, headers=h).status_code == 401
    assert client.delete("/orders/tp-x", headers=h).status_code == 401


def test_health_is_open(client: TestClient) -> None:
    r = client.get("/health", headers={"X-API-Key": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["snapshot"]["sequence"] == 1 and body["snapshot"]["age_seconds"] >= 0
    assert body["ops_store"]["ok"] is True


def test_revoked_key_stops_working(client: TestClient, api_env: ApiEnv) -> None:
    store = OpsStore(api_env.store_url)
    record, key = create_key(store, "temp")
    assert client.get("/signals", headers={"X-API-Key": key}).status_code == 200
    assert revoke_key(store, record.id)
    client.app.state.trading.checker()._cache.clear()  # skip the 5 s positive cache
    assert client.get("/signals", headers={"X-API-Key": key}).status_code == 401
    store.close()


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    r = client.get("/signals", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/signals", headers={"X-Request-ID": "bad id with spaces"})
    assert len(r.headers["x-request-id"]) == 32
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["request_id"] == r.headers["x-request-id"]


def test_cors_from_settings(api_env: ApiEnv) -> None:
    settings = api_env.settings.model_copy(update={"cors_origins": ["http://localhost:5173"]})
    with TestClient(create_app(settings)) as c:
        r = c.options(
            "/signals",
            headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "X-API-Key"},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        r = c.options("/signals", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


# ---- snapshot reads --------------------------------------------------------------------------
def test_signals_filters_and_pagination(client: TestClient) -> None:
    r = client.get("/signals").json()
    assert r["total"] == 4 and len(r["items"]) == 4
    assert [s["ts"] for s in r["items"]] == sorted((s["ts"] for s in r["items"]), reverse=True)
    assert client.get("/signals", params={"symbol": "goog"}).json()["total"] == 2
    assert client.get("/signals", params={"kind": "crp_long"}).json()["total"] == 2
    assert client.get("/signals", params={"min_score": 60}).json()["total"] == 2
    d40 = (START + timedelta(days=40)).isoformat()
    assert client.get("/signals", params={"start": d40, "end": d40}).json()["total"] == 2
    page = client.get("/signals", params={"limit": 3, "offset": 2}).json()
    assert page["total"] == 4 and len(page["items"]) == 2 and page["offset"] == 2
    assert client.get("/signals", params={"start": "2024-03-01", "end": "2024-01-01"}).status_code == 422


def test_market_data_with_indicators(client: TestClient) -> None:
    r = client.get("/market-data/GOOG", params={"limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "marts.indicators_daily" and body["count"] == 5
    bars = body["bars"]
    assert [b["ts"] for b in bars] == sorted(b["ts"] for b in bars)  # oldest first
    assert bars[-1]["ts"].startswith((START + timedelta(days=59)).isoformat())  # the newest 5
    assert {"sma_20", "rsi_14", "macd", "bb_upper", "atr_14"} <= set(bars[-1]["indicators"])
    first = client.get("/market-data/GOOG", params={"end": START.isoformat()}).json()["bars"]
    assert first[0]["indicators"]["atr_14"] is None  # NaN in the warm-up comes out as null
    assert first[0]["indicators"]["sma_20"] is None
    r = client.get("/market-data/GOOG", params={"start": "2024-01-10", "end": "2024-01-12T00:00:00"})
    assert [b["session_date"] for b in r.json()["bars"]] == ["2024-01-10", "2024-01-11", "2024-01-12"]
    r = client.get("/market-data/EURUSD", params={"timeframe": "1h"})
    assert r.status_code == 200 and r.json()["source"] == "raw.bars_intraday" and r.json()["count"] == 10
    assert client.get("/market-data/NOPE").status_code == 404
    assert client.get("/market-data/GOOG", params={"timeframe": "7m"}).status_code == 422


def test_market_data_lists_the_series_it_can_serve(client: TestClient) -> None:
    """Issue 20.5: a client (the dashboard) picks a symbol and timeframe that have bars, instead
    of guessing EURUSD at 1d and getting a 404."""
    body = client.get("/market-data").json()
    series = {(s["symbol"], s["timeframe"]): s for s in body["items"]}
    assert body["count"] == len(body["items"]) == len(series)
    assert ("EURUSD", "1h") in series and ("EURUSD", "1d") not in series and ("GOOG", "1d") in series
    assert [s["symbol"] for s in body["items"]] == sorted(s["symbol"] for s in body["items"])
    for (symbol, tf), s in series.items():  # each one is what GET /market-data/{symbol} serves
        md = client.get(f"/market-data/{symbol}", params={"timeframe": tf, "limit": 10_000}).json()
        assert s["bars"] == md["count"] and s["last_ts"] == md["bars"][-1]["ts"] and s["first_ts"] == md["bars"][0]["ts"]
    assert client.get("/market-data", params={"symbol": "eurusd"}).json()["items"] == [series["EURUSD", "1h"]]
    assert client.get("/market-data", params={"symbol": "NOPE"}).json() == {"count": 0, "items": []}


def test_scans_and_alerts(client: TestClient) -> None:
    scans = client.get("/scans").json()
    assert scans["total"] == 3
    first = scans["items"][0]
    assert first["id"] == f"crp_daily:1d:{(START + timedelta(days=50)).isoformat()}"
    detail = client.get(f"/scans/{first['id']}").json()
    assert detail["result"]["symbols"] == ["MSFT"] and detail["signals"][0]["kind"] == "crp_short"
    assert client.get("/scans/crp_daily:1d:2030-01-01").status_code == 404
    assert client.get("/scans/not-an-id").status_code == 422
    alerts = client.get("/alerts").json()
    assert alerts["total"] == 2 and all(a["score"] >= 70 for a in alerts["items"])
    assert client.get("/alerts", params={"symbol": "MSFT"}).json()["total"] == 1


def test_scans_name_each_symbol_once(client: TestClient, api_env: ApiEnv) -> None:
    """Issue 20.7: an intraday scan firing on three bars of EURUSD in one session was served as
    symbols ["EURUSD","EURUSD","EURUSD"]. The mart now names each symbol once; the API also
    does for a snapshot whose scan_results still list one entry per signal (this fixture's
    view, as the mart was)."""
    from trading_pipeline.marketdata.warehouse import writer

    day = START + timedelta(days=3)
    with writer(api_env.warehouse) as con:
        for hour, (symbol, score) in enumerate([("EURUSD", 70.0), ("GBPUSD", 80.0), ("EURUSD", 90.0), ("EURUSD", 60.0)]):
            con.execute(
                "INSERT INTO marts.signals VALUES ('crp_intraday', ?, '1h', ?, ?, 'crp_long', 'long', ?, 'r', 1.1, NULL, 'fp', now()::TIMESTAMP)",
                [symbol, f"{day.isoformat()} {10 + hour:02d}:00:00", day, score],
            )
    api_env.publish()
    items = client.get("/scans", params={"timeframe": "1h"}).json()["items"]
    assert len(items) == 1 and items[0]["n_signals"] == 4
    assert items[0]["symbols"] == ["EURUSD", "GBPUSD"] and items[0]["top_symbol"] == "EURUSD"
    detail = client.get(f"/scans/{items[0]['id']}").json()
    assert detail["result"]["symbols"] == ["EURUSD", "GBPUSD"] and len(detail["signals"]) == 4


def test_before_marts_exist_reads_degrade_gracefully(tmp_path) -> None:
    from tests.api.support import build_warehouse
    from trading_pipeline.serving.publish import publish_snapshot
    from trading_pipeline.settings import PROJECT_DIR, Settings

    settings = Settings(home=tmp_path, risk_file=PROJECT_DIR / "risk.yaml")
    build_warehouse(settings.warehouse_path, with_marts=False)
    publish_snapshot(settings.warehouse_path, settings.serving_dir)
    store = OpsStore(settings.ops_store_url)
    _r, key = create_key(store, "t")
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as c:
        assert c.get("/signals").json() == {"total": 0, "limit": 100, "offset": 0, "items": []}
        assert c.get("/alerts").json()["total"] == 0
        md = c.get("/market-data/GOOG").json()
        assert md["source"] == "raw.bars_daily" and md["count"] == 60 and md["bars"][0]["indicators"] == {}


# ---- orders, positions, portfolio, risk --------------------------------------------------------
def test_post_order_idempotent_and_cancel(client: TestClient) -> None:
    body = {"symbol": "GOOG", "side": "buy", "quantity": "10"}
    r1 = client.post("/orders", json=body, headers={"Idempotency-Key": "abc"})
    assert r1.status_code == 201, r1.text
    order = r1.json()["order"]
    assert order["status"] == "accepted" and order["quantity"] == "10" and order["broker"] == "paper"
    r2 = client.post("/orders", json=body, headers={"Idempotency-Key": "abc"})
    assert r2.status_code == 200 and r2.json()["idempotent_replay"] is True
    assert r2.json()["order"]["client_order_id"] == order["client_order_id"]
    r3 = client.post("/orders", json={**body, "quantity": "11"}, headers={"Idempotency-Key": "abc"})
    assert r3.status_code == 409
    listed = client.get("/orders").json()
    assert listed["count"] == 1 and listed["items"][0]["client_order_id"] == order["client_order_id"]
    assert client.get("/orders", params={"status": "open"}).json()["count"] == 1
    assert client.get("/orders", params={"status": "filled"}).json()["count"] == 0
    assert client.get("/orders", params={"status": "bogus"}).status_code == 422
    assert client.get(f"/orders/{order['client_order_id']}").json()["status"] == "accepted"
    d = client.delete(f"/orders/{order['client_order_id']}")
    assert d.status_code == 200 and d.json()["status"] == "cancelled"
    assert client.delete(f"/orders/{order['client_order_id']}").status_code == 409
    assert client.delete("/orders/tp-doesnotexist").status_code == 404


def test_risk_rejection_is_422_with_rule_and_reason(client: TestClient) -> None:
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "5000"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["rule"] == "max_order_notional" and "limit" in detail["reason"]
    stored = client.get(f"/orders/{detail['client_order_id']}").json()
    assert stored["status"] == "denied"
    risk = client.get("/risk").json()
    assert risk["recent_events"][0]["rule"] == "max_order_notional"
    # a limit far from the last close trips the price collar
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1", "order_type": "limit", "limit_price": "1"})
    assert r.status_code == 422 and r.json()["detail"]["rule"] == "price_collar"
    # an unknown symbol has no last close: rejected, not a 500
    r = client.post("/orders", json={"symbol": "ZZZZ", "side": "buy", "quantity": "1"})
    assert r.status_code == 422 and r.json()["detail"]["rule"] == "price_collar"


def test_api_orders_are_held_to_buying_power(api_env: ApiEnv, tmp_path) -> None:
    """POST /orders shares the engine: working buys hold the paper account's 100,000 of cash;
    GET /risk shows what is left."""
    risk = tmp_path / "risk.yaml"
    risk.write_text(
        "max_order_notional: 1000000\nmax_symbol_exposure: 1000000\nmax_total_exposure: 1000000\n"
        "max_concentration_pct: 100\nmax_position_quantity: 100000\nprice_collar_pct: 50\n"
    )
    app = create_app(api_env.settings.model_copy(update={"risk_file": risk}), poll_interval=0.05, heartbeat=1.0)
    with TestClient(app) as c:
        c.headers.update(api_env.headers())

        def buy(symbol: str, qty: int, limit: int):
            return c.post("/orders", json={"symbol": symbol, "side": "buy", "quantity": str(qty),
                                           "order_type": "limit", "limit_price": str(limit)})

        assert buy("GOOG", 480, 125).status_code == 201  # 60,000 working
        r = buy("MSFT", 250, 160)  # + 40,000: at the cash
        assert r.status_code == 422 and r.json()["detail"]["rule"] == "buying_power"
        assert "reaching buying power 100,000.00" in r.json()["detail"]["reason"]
        assert buy("MSFT", 249, 160).status_code == 201
        usage = c.get("/risk").json()["usage"][0]
        assert usage["account"] == "paper" and float(usage["buying_power"]) == 160.0
        assert float(usage["daily_pnl"]) == 0.0 and float(usage["day_start_equity"]) == 100000.0


def test_kill_switch_blocks_api_orders(client: TestClient, api_env: ApiEnv) -> None:
    store = OpsStore(api_env.store_url)
    store.set_kill_switch(True, reason="test halt", updated_by="pytest")
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1"}, headers={"Idempotency-Key": "ks"})
    assert r.status_code == 422 and r.json()["detail"]["rule"] == "kill_switch"
    # the same key again replays the rejection
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1"}, headers={"Idempotency-Key": "ks"})
    assert r.status_code == 422 and r.json()["detail"]["rule"] == "kill_switch"
    risk = client.get("/risk").json()
    assert risk["kill_switch"]["active"] is True and risk["kill_switch"]["reason"] == "test halt"
    store.close()


def test_positions_and_portfolio_after_a_fill(client: TestClient, api_env: ApiEnv) -> None:
    from trading_api.snapshot import SnapshotBarFeed
    from trading_pipeline.trading.brokers.paper import PaperBroker
    from trading_pipeline.trading.execution import sync_open_orders

    r = client.post("/orders", json={"symbol": "MSFT", "side": "buy", "quantity": "3"})
    assert r.status_code == 201
    # the paper broker fills on the first bar after the order: publish one, then sync
    from tests.api.support import daily_bars
    from trading_pipeline.marketdata.warehouse import upsert_bars, writer

    with writer(api_env.warehouse) as con:
        bars = daily_bars("MSFT", 61, base=150.0)
        bars = bars.with_columns(bars["ts"].dt.offset_by("1000d"), bars["session_date"].dt.offset_by("1000d"))
        # prices as float bars carry them (binary floating point)
        last = bars.tail(1).with_columns(open=pl.lit(784.4329999999993), high=pl.lit(790.1),
                                         low=pl.lit(780.2), close=pl.lit(786.1110000000001))
        upsert_bars(con, "raw.bars_daily", last, "test")
    api_env.publish()
    state = client.app.state.trading
    broker = PaperBroker(state.store(), SnapshotBarFeed(state.reader), account="paper")
    broker.process_bars()
    sync_open_orders(state.store(), broker, "paper")
    pos = client.get("/positions").json()
    assert pos["count"] == 1 and pos["items"][0]["symbol"] == "MSFT" and pos["items"][0]["quantity"] == "3"
    assert pos["items"][0]["last_price"] is not None
    pf = client.get("/portfolio").json()["accounts"][0]
    assert pf["account"] == "paper" and pf["positions"][0]["symbol"] == "MSFT"
    risk = client.get("/risk").json()
    assert risk["usage"][0]["account"] == "paper" and float(risk["usage"][0]["gross_exposure"]) > 0
    # money to the cent, prices to 1/10,000, percentages to 1/100 (issue 20.7: 784.4329999999993
    # and a 27-digit max_concentration_pct), computed from these float bars
    money = {"market_value", "unrealized_pnl", "realized_pnl", "starting_cash", "cash", "equity",
             "gross_exposure", "daily_pnl", "day_start_equity", "buying_power", "max_concentration_pct"}
    seen = set()
    for obj in [pos["items"][0], pf, pf["positions"][0], risk["usage"][0]]:
        for k, v in obj.items():
            if v is None or isinstance(v, list):
                continue
            if k in money:
                assert re.fullmatch(r"-?\d+\.\d{2}", v), (k, v)
                seen.add(k)
            elif k in ("avg_price", "last_price"):
                assert re.fullmatch(r"-?\d+\.\d{4}", v), (k, v)
                seen.add(k)
    assert {"avg_price", "last_price", "market_value", "equity", "max_concentration_pct"} <= seen


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"symbol": "GOOG"},
        {"symbol": "GOOG", "side": "hold", "quantity": 1},
        {"symbol": "GOOG", "side": "buy", "quantity": 0},
        {"symbol": "GOOG", "side": "buy", "quantity": -5},
        {"symbol": "GOOG", "side": "buy", "quantity": "NaN"},
        {"symbol": "GOOG", "side": "buy", "quantity": "Infinity"},
        {"symbol": "GOOG", "side": "buy", "quantity": "1e400"},
        {"symbol": "GOOG", "side": "buy", "quantity": 1, "order_type": "limit"},
        {"symbol": "GOOG", "side": "buy", "quantity": 1, "limit_price": 100},
        {"symbol": "GOOG", "side": "buy", "quantity": 1, "extra": True},
        {"symbol": "../etc", "side": "buy", "quantity": 1},
        {"symbol": "GOOG", "side": "buy", "quantity": 1, "account": "a b"},
        [1, 2],
        "just a string",
    ],
)
def test_bad_order_payloads_are_4xx(client: TestClient, body) -> None:
    r = client.post("/orders", json=body)
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)


def test_malformed_json_and_headers_are_4xx(client: TestClient) -> None:
    r = client.post("/orders", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": 1}, headers={"Idempotency-Key": "has spaces!"})
    assert r.status_code == 422


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/market-data/{symbol}", "/signals", "/scans", "/scans/{scan_id}", "/portfolio",
                 "/positions", "/orders", "/orders/{client_order_id}", "/alerts", "/risk"):
        assert path in spec["paths"], path
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"] or "201" in op["responses"], (method, path)
            ok = op["responses"].get("200") or op["responses"]["201"]
            if path == "/metrics":  # Prometheus text exposition, not JSON
                assert any(ct.startswith("text/plain") for ct in ok["content"]), ok
                continue
            assert "schema" in ok["content"]["application/json"], (method, path)


def test_dates_in_the_past_and_future_are_fine(client: TestClient) -> None:
    far = (date.today() + timedelta(days=3650)).isoformat()
    assert client.get("/signals", params={"start": far}).json()["total"] == 0
    assert client.get("/market-data/GOOG", params={"start": far}).json()["count"] == 0


def test_market_data_timezone_aware_bounds_are_utc(client: TestClient) -> None:
    r = client.get("/market-data/GOOG", params={"start": "2024-01-10T05:00:00+05:00", "end": "2024-01-11T05:00:00+05:00"})
    assert [b["session_date"] for b in r.json()["bars"]] == ["2024-01-10", "2024-01-11"]


def test_idempotency_keys_are_scoped_per_api_key(client: TestClient, api_env: ApiEnv) -> None:
    store = OpsStore(api_env.store_url)
    _r, other = create_key(store, "other-client")
    store.close()
    body = {"symbol": "GOOG", "side": "buy", "quantity": "1"}
    a = client.post("/orders", json=body, headers={"Idempotency-Key": "same"})
    b = client.post("/orders", json={**body, "quantity": "2"}, headers={"Idempotency-Key": "same", "X-API-Key": other})
    assert a.status_code == 201 and b.status_code == 201
    assert a.json()["order"]["client_order_id"] != b.json()["order"]["client_order_id"]


def test_docs_and_schema_are_open_and_data_routes_are_not(api_env: ApiEnv) -> None:
    """Issue 21.9: what the README says. The docs pages, their assets and the schema hold no
    data and answer without a key; a data route does not."""
    app = create_app(api_env.settings, poll_interval=0.05, heartbeat=1.0)
    with TestClient(app) as anon:
        for path in ("/health", "/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js",
                     "/docs-assets/swagger-ui.css", "/docs-assets/redoc.standalone.js"):
            assert anon.get(path).status_code == 200, path
        assert anon.get("/signals").status_code == 401
        assert anon.get("/docs-assets/../main.py").status_code == 404
        assert anon.get("/docs-assets/nothing.js").status_code == 404


def test_docs_pages_load_their_assets_from_this_server(client: TestClient) -> None:
    """Issue 20.2: FastAPI's pages load Swagger UI and ReDoc from a CDN (blank offline)."""
    for page in ("/docs", "/redoc"):
        body = client.get(page).text
        srcs = re.findall(r'(?:src|href)="([^"]+)"', body)
        assert srcs and all(s.startswith("/") for s in srcs), (page, srcs)
        assert "cdn" not in body.lower() and "fonts.googleapis" not in body


# ---- order types and time in force -----------------------------------------------------------
def _last_close(client: TestClient, symbol: str) -> Decimal:
    bars = client.get(f"/market-data/{symbol}").json()["bars"]
    return Decimal(str(max(bars, key=lambda b: b["ts"])["close"]))


def test_post_stop_orders_of_every_type(client: TestClient) -> None:
    last = _last_close(client, "GOOG")
    up, down = (last * Decimal("1.02")).quantize(Decimal("0.01")), (last * Decimal("0.98")).quantize(Decimal("0.01"))
    cases = [
        ({"order_type": "stop", "stop_price": str(up), "time_in_force": "gtc"},
         {"stop_price": str(up), "limit_price": None, "time_in_force": "gtc"}),
        ({"order_type": "stop_limit", "side": "sell", "stop_price": str(down), "limit_price": str(down - 1)},
         {"stop_price": str(down), "limit_price": str(down - 1)}),
        ({"order_type": "trailing_stop", "side": "sell", "trail_percent": "2.5"}, {"trail_percent": "2.5", "trail_amount": None}),
        ({"order_type": "trailing_stop", "trail_amount": "1.25"}, {"trail_amount": "1.25", "trail_percent": None}),
        ({"order_type": "limit", "limit_price": str(last), "time_in_force": "opg"}, {"time_in_force": "opg"}),
    ]
    for i, (extra, expect) in enumerate(cases):
        body = {"symbol": "GOOG", "side": "buy", "quantity": "1", **extra}
        r = client.post("/orders", json=body, headers={"Idempotency-Key": f"stop-{i}"})
        assert r.status_code == 201, (body, r.text)
        order = r.json()["order"]
        assert order["order_type"] == body["order_type"] and order["status"] == "accepted"
        assert {k: order[k] for k in expect} == expect
        assert client.get(f"/orders/{order['client_order_id']}").json() == order  # stored as answered
    # the same key with another stop price is another order
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1", "order_type": "stop",
                                     "stop_price": str(up + 1), "time_in_force": "gtc"}, headers={"Idempotency-Key": "stop-0"})
    assert r.status_code == 409


def test_contradictory_order_terms_are_422_and_nothing_is_stored(client: TestClient) -> None:
    last = _last_close(client, "GOOG")
    base = {"symbol": "GOOG", "side": "buy", "quantity": "1"}
    bad = [
        ({"order_type": "stop"}, "needs a positive stop_price"),
        ({"order_type": "stop_limit", "stop_price": str(last + 1)}, "needs a positive limit_price"),
        ({"order_type": "stop_limit", "limit_price": str(last + 1)}, "needs a positive stop_price"),
        ({"order_type": "stop", "stop_price": str(last + 1), "limit_price": str(last + 2)}, "has no limit_price"),
        ({"order_type": "trailing_stop"}, "exactly one of"),
        ({"order_type": "trailing_stop", "trail_percent": "1", "trail_amount": "1"}, "exactly one of"),
        ({"order_type": "trailing_stop", "trail_percent": "0"}, "greater than 0"),
        ({"order_type": "trailing_stop", "trail_amount": "-1"}, "greater than 0"),
        ({"order_type": "trailing_stop", "trail_percent": "100"}, "less than 100"),
        ({"order_type": "market", "stop_price": str(last + 1)}, "has no stop_price"),
        ({"order_type": "limit", "limit_price": str(last), "trail_amount": "1"}, "has no trail_percent"),
        ({"order_type": "stop", "stop_price": str(last + 1), "time_in_force": "opg"}, "day or gtc"),
        ({"order_type": "stop", "stop_price": str(last + 1), "time_in_force": "fok"}, "time_in_force"),
        ({"order_type": "stop", "stop_price": str(last)}, "buy stop must be above the market"),
        ({"order_type": "stop", "side": "sell", "stop_price": str(last + 1)}, "sell stop must be below the market"),
        ({"order_type": "stop_limit", "stop_price": str(last - 1), "limit_price": str(last)}, "buy stop must be above"),
    ]
    for extra, message in bad:
        r = client.post("/orders", json={**base, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert message in r.text, (extra, r.text)
    locs = {
        "stop": ["body", "stop_price"],
        "stop_limit": ["body", "limit_price"],
        "trailing_stop": ["body", "trail_percent"],
    }
    for otype, loc in locs.items():
        extra = {"order_type": otype} if otype != "stop_limit" else {"order_type": otype, "stop_price": str(last + 1)}
        assert client.post("/orders", json={**base, **extra}).json()["detail"][0]["loc"] == loc
    r = client.post("/orders", json={**base, "order_type": "stop", "stop_price": str(last + 1), "time_in_force": "ioc"})
    assert r.json()["detail"][0]["loc"] == ["body", "time_in_force"]
    assert client.get("/orders").json()["count"] == 0
    assert client.get("/risk").json()["recent_events"] == []


# ---- modify ----------------------------------------------------------------------------------
def test_patch_modifies_a_working_order_and_refuses_with_404_409_422(client: TestClient) -> None:
    last = _last_close(client, "GOOG")
    limit, new_limit = (last * Decimal("0.98")).quantize(Decimal("0.01")), (last * Decimal("0.99")).quantize(Decimal("0.01"))
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "2", "order_type": "limit",
                                     "limit_price": str(limit), "time_in_force": "gtc"})
    assert r.status_code == 201, r.text
    coid = r.json()["order"]["client_order_id"]
    assert client.patch(f"/orders/{coid}", json={"quantity": "3"}, headers={"X-API-Key": ""}).status_code == 401
    p = client.patch(f"/orders/{coid}", json={"quantity": "3", "limit_price": str(new_limit)})
    assert p.status_code == 200, p.text
    assert (p.json()["quantity"], p.json()["limit_price"], p.json()["status"]) == ("3", str(new_limit), "accepted")
    assert client.get(f"/orders/{coid}").json() == p.json()  # stored as answered
    unchanged = p.json()
    refused = [
        ({"stop_price": str(last + 1)}, 422, "limit order has no stop_price"),
        ({}, 422, "at least one of"),
        ({"trail_percent": "1", "trail_amount": "1"}, 422, "not both"),
        ({"limit_price": str(new_limit)}, 422, "nothing to modify"),
        ({"quantity": "0"}, 422, "greater than 0"),
        ({"quantity": "1", "side": "sell"}, 422, "Extra inputs"),
        ({"quantity": "5000"}, 422, "max_order_notional"),  # risk on the new terms, as POST reports it
    ]
    for body, code, text in refused:
        r = client.patch(f"/orders/{coid}", json=body)
        assert r.status_code == code and text in r.text, (body, r.text)
        assert client.get(f"/orders/{coid}").json() == unchanged, body
    denied = client.patch(f"/orders/{coid}", json={"quantity": "5000"}).json()["detail"]
    assert denied["rule"] == "max_order_notional" and denied["client_order_id"] == coid
    assert client.patch("/orders/tp-doesnotexist", json={"quantity": "1"}).status_code == 404
    assert client.delete(f"/orders/{coid}").status_code == 200
    r = client.patch(f"/orders/{coid}", json={"quantity": "4"})
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert client.get(f"/orders/{coid}").json()["quantity"] == "3"


def test_patch_of_terms_the_broker_cannot_replace_is_409(client: TestClient, monkeypatch) -> None:
    from trading_pipeline.trading.brokers.base import refuse_stop_modify

    last = _last_close(client, "GOOG")
    stop = (last * Decimal("0.98")).quantize(Decimal("0.01"))
    r = client.post("/orders", json={"symbol": "GOOG", "side": "sell", "quantity": "1", "order_type": "stop",
                                     "stop_price": str(stop), "time_in_force": "gtc"})
    assert r.status_code == 201, r.text
    coid, order = r.json()["order"]["client_order_id"], r.json()["order"]
    state = client.app.state.trading
    paper_for = state.broker

    class LiveLike:  # a live broker that cannot replace stops and trails
        name = "live"

        def __init__(self, account: str) -> None:
            self.paper = paper_for(account)

        def __getattr__(self, item: str):
            return getattr(self.paper, item)

        def modify(self, client_order_id, *, stop_price=None, trail_percent=None, trail_amount=None, **terms):
            refuse_stop_modify(self.name, stop_price, trail_percent, trail_amount)
            return self.paper.modify(client_order_id, **terms)

    monkeypatch.setattr(state, "broker", LiveLike)
    r = client.patch(f"/orders/{coid}", json={"stop_price": str(stop - 1)})
    assert r.status_code == 409 and "not supported by this broker (live) yet" in r.json()["detail"]
    assert client.get(f"/orders/{coid}").json() == order


# ---- brackets --------------------------------------------------------------------------------
def test_post_a_bracket_lists_its_exits_and_delete_cancels_them(client: TestClient) -> None:
    last = _last_close(client, "GOOG")
    limit = (last * Decimal("0.98")).quantize(Decimal("0.01"))
    tp, sl = (limit * Decimal("1.05")).quantize(Decimal("0.01")), (limit * Decimal("0.95")).quantize(Decimal("0.01"))
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "2", "order_type": "limit",
                                     "limit_price": str(limit), "time_in_force": "gtc",
                                     "bracket": {"take_profit_price": str(tp), "stop_loss_price": str(sl)}})
    assert r.status_code == 201, r.text
    body = r.json()
    coid = body["order"]["client_order_id"]
    kids = body["children"]
    assert [(k["client_order_id"], k["order_type"], k["side"], k["quantity"], k["limit_price"], k["stop_price"]) for k in kids] == [
        (f"{coid}-tp", "limit", "sell", "2", str(tp), None),
        (f"{coid}-sl", "stop", "sell", "2", None, str(sl)),
    ]
    assert {k["parent_client_order_id"] for k in kids} == {coid} and kids[0]["oco_group"] == kids[1]["oco_group"] == f"{coid}-oco"
    assert body["order"]["children"] == [f"{coid}-tp", f"{coid}-sl"]
    assert sorted(client.get(f"/orders/{coid}").json()["children"]) == sorted([f"{coid}-tp", f"{coid}-sl"])
    listed = {o["client_order_id"]: o for o in client.get("/orders").json()["items"]}
    assert set(listed) == {coid, f"{coid}-tp", f"{coid}-sl"}
    assert listed[f"{coid}-tp"]["parent_client_order_id"] == coid and listed[coid]["parent_client_order_id"] is None
    assert client.delete(f"/orders/{coid}").json()["status"] == "cancelled"
    assert {o["client_order_id"]: o["status"] for o in client.get("/orders").json()["items"]} == {
        coid: "cancelled", f"{coid}-tp": "cancelled", f"{coid}-sl": "cancelled"}


def test_a_bracket_that_does_not_fit_is_422_on_its_field_and_nothing_is_stored(client: TestClient) -> None:
    last = _last_close(client, "GOOG")
    base = {"symbol": "GOOG", "side": "buy", "quantity": "1"}
    bad = [
        ({"bracket": {"take_profit_price": str(last - 1), "stop_loss_price": str(last - 2)}}, ["body", "bracket", "take_profit_price"], "must be above"),
        ({"bracket": {"take_profit_price": str(last + 2), "stop_loss_price": str(last + 1)}}, ["body", "bracket", "stop_loss_price"], "must be below"),
        ({"side": "sell", "bracket": {"take_profit_price": str(last + 1), "stop_loss_price": str(last + 2)}},
         ["body", "bracket", "take_profit_price"], "must be below"),
        ({"bracket": {"take_profit_price": str(last + 1)}}, ["body", "bracket", "stop_loss_price"], "Field required"),
        ({"bracket": {"take_profit_price": "-1", "stop_loss_price": str(last - 1)}}, ["body", "bracket", "take_profit_price"], "greater than 0"),
        ({"order_type": "stop", "stop_price": str(last + 1), "bracket": {"take_profit_price": str(last + 5), "stop_loss_price": str(last - 5)}},
         ["body", "order_type"], "market or limit"),
    ]
    for extra, loc, message in bad:
        r = client.post("/orders", json={**base, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["detail"][0]["loc"] == loc and message in r.text, (extra, r.text)
    assert client.get("/orders").json()["count"] == 0


def test_a_broker_without_brackets_answers_409_and_stores_nothing(client: TestClient, monkeypatch) -> None:
    from trading_pipeline.trading.brokers.paper import PaperBroker

    monkeypatch.setattr(PaperBroker, "supports_brackets", False)
    last = _last_close(client, "GOOG")
    r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1",
                                     "bracket": {"take_profit_price": str(last + 5), "stop_loss_price": str(last - 5)}})
    assert r.status_code == 409 and "brackets are not supported by this broker" in r.text
    assert client.get("/orders").json()["count"] == 0


def test_market_data_raw_prices_are_the_bars_as_loaded(client: TestClient, api_env) -> None:
    """?prices=raw serves raw.bars_* (before split/dividend adjustment, no indicators); the
    default serves the adjusted marts. Here the raw GOOG closes are doubled before a date (an
    unadjusted 2:1 split), so the two answers differ exactly there."""
    from trading_pipeline.marketdata.warehouse import writer
    from trading_pipeline.serving.publish import publish_snapshot

    cut = (START + timedelta(days=40)).isoformat()
    with writer(api_env.warehouse) as con:
        con.execute(f"UPDATE raw.bars_daily SET open = open * 2, high = high * 2, low = low * 2, close = close * 2 "
                    f"WHERE symbol = 'GOOG' AND ts < '{cut}'")
    publish_snapshot(api_env.warehouse, api_env.serving_dir)
    adjusted = client.get("/market-data/GOOG", params={"limit": 60}).json()
    raw = client.get("/market-data/GOOG", params={"limit": 60, "prices": "raw"}).json()
    assert adjusted["source"] == "marts.indicators_daily" and raw["source"] == "raw.bars_daily"
    assert raw["adjustment"] == "none" and raw["count"] == adjusted["count"] == 60
    assert all(b["indicators"] == {} for b in raw["bars"])
    for a, r in zip(adjusted["bars"], raw["bars"], strict=True):
        assert a["ts"] == r["ts"]
        assert r["close"] == pytest.approx(a["close"] * (2 if a["ts"] < cut else 1))
    r = client.get("/market-data/GOOG", params={"prices": "unadjusted"})
    assert r.status_code == 422 and "prices" in r.text
