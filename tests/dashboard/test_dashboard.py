"""The dashboard: auth and assets over plain HTTP, then the real page in a real chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from tests.api.support import ApiEnv, add_signals
from tests.dashboard.conftest import (
    GOOG_BARS,
    BrowserPage,
    DashboardServer,
    artifacts_dir,
    goog_bars,
    new_signal,
)
from trading_api.main import create_app
from trading_api.routers import dashboard
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.store import OpsStore


@pytest.fixture
def client(dash_env: ApiEnv) -> Iterator[TestClient]:
    app = create_app(dash_env.settings, poll_interval=0.05, heartbeat=1.0)
    if not any(getattr(r, "path", None) == "/" for r in app.routes):
        app.include_router(dashboard.router)  # until main.py includes it
    with TestClient(app) as c:
        yield c


# ---- plain HTTP -------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("query", ["", "?api_key=trd_not-a-real-key", "?api_key="])
def test_root_without_a_valid_key_is_a_401_page(client: TestClient, query: str) -> None:
    r = client.get("/" + query)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert "trading api-key create" in r.text and "/?api_key=" in r.text
    assert "Content-Security-Policy" in r.headers
    assert "trd_not-a-real-key" not in r.text  # the refused key is not echoed back


@pytest.mark.timeout(60)
def test_root_with_a_key_serves_the_page_with_only_local_assets(
    client: TestClient, dash_env: ApiEnv
) -> None:
    for r in (
        client.get(f"/?api_key={dash_env.key}"),
        client.get("/", headers={"X-API-Key": dash_env.key}),
    ):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'self'" in r.headers["content-security-policy"]
        sources = re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"", r.text)
        assert any(s.startswith("/static/plotly.min.js") for s in sources), sources
        assert any(s.startswith("/static/dashboard.js") for s in sources), sources
        assert any(s.startswith("/static/dashboard-orders.js") for s in sources), sources
        assert any(s.startswith("/static/dashboard.css") for s in sources), sources
        for s in sources:
            assert s.startswith("/static/") or s == "data:,", f"non-local asset {s}"
        assert "http://" not in r.text and "https://" not in r.text
        assert dash_env.key not in r.text  # the page never embeds the key


@pytest.mark.timeout(60)
def test_static_assets_are_served_open_with_caching(client: TestClient) -> None:
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "max-age=86400" in r.headers["cache-control"]
    assert len(r.content) > 1_000_000 and b"plotly" in r.content[:2000].lower()
    etag = r.headers["etag"]
    again = client.get("/static/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("dashboard-orders.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("dashboard-auth.js", "text/javascript"),
    ):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    assert client.get("/static/dashboard.html").status_code == 404  # only the allow-listed assets
    assert client.get("/static/..%2Fdeps.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


@pytest.mark.timeout(60)
def test_static_assets_are_gzipped_for_clients_that_accept_it(client: TestClient) -> None:
    from trading_api.routers.dashboard import plotly_js

    raw = plotly_js().read_bytes()
    plain = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw
    gz = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip, deflate"})
    assert gz.headers["content-encoding"] == "gzip" and "Accept-Encoding" in gz.headers["vary"]
    assert gz.content == raw  # httpx decoded it: the same bytes
    assert int(gz.headers["content-length"]) < len(raw) // 2  # what went over the wire
    assert gz.headers["etag"] != plain.headers["etag"]  # one validator per encoding
    again = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip", "If-None-Match": gz.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.timeout(60)
def test_dashboard_status_needs_a_key_and_is_200_without_a_snapshot(
    client: TestClient, dash_env: ApiEnv
) -> None:
    assert client.get("/dashboard/status").status_code == 401
    r = client.get("/dashboard/status", headers={"X-API-Key": dash_env.key})
    assert r.status_code == 200 and r.json()["snapshot"]["ok"] is True
    dash_env.snapshot.unlink()
    client.app.state.trading.reader.close()
    r = client.get("/dashboard/status", headers={"X-API-Key": dash_env.key})
    assert r.status_code == 200 and r.json()["snapshot"]["ok"] is False


# ---- the real page in chromium ----------------------------------------------------------------
CANDLES = """() => {
  const d = document.getElementById('chart');
  const c = d && d.data && d.data.find(t => t.type === 'candlestick');
  if (!c) return null;
  return {
    n: c.x.length, name: c.name, last: c.x[c.x.length - 1], close: c.close[c.close.length - 1],
    traces: d.data.map(t => [t.name, t.type, t.yaxis, (t.x || []).length]),
    rendered: d.querySelectorAll('.candlestick .trace, g.trace.boxes, .cartesianlayer .trace').length,
  };
}"""


def fill_broker_order(env: ApiEnv, coid: str, symbol: str, qty: int, price: str) -> None:
    """Book the broker's fill in the ops store, the way the order job syncs a paper fill."""
    store = OpsStore(env.store_url)
    try:
        fill = BrokerFill(
            f"{coid}-f1", coid, Decimal(qty), Decimal(price), Decimal("1"), datetime(2013, 3, 1)
        )
        store.sync_from_broker(
            coid,
            BrokerOrder(
                coid,
                f"paper-{coid}",
                symbol,
                Side.BUY,
                Decimal(qty),
                Decimal(qty),
                OrderStatus.FILLED,
                Decimal(price),
                fills=(fill,),
            ),
        )
    finally:
        store.close()


def _signal_markers(page) -> int:
    return page.evaluate(
        "() => document.getElementById('chart').data.filter(t => (t.name || '').startsWith('signals ')).reduce((n, t) => n + t.x.length, 0)"
    )


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_dashboard_in_chromium_renders_and_updates_live(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    resp = page.goto(f"{dash_server.url}/?api_key={dash_env.key}", wait_until="load")
    assert resp is not None and resp.status == 200
    page.wait_for_function(CANDLES, timeout=20_000)
    assert "api_key" not in page.url  # stripped from the address bar, kept in sessionStorage
    assert page.evaluate("() => sessionStorage.getItem('trading.apiKey')") == dash_env.key

    # The chart: GOOG's 300 sample candles, overlays, volume, RSI and MACD panes, signal markers.
    info = page.evaluate(CANDLES)
    assert info["name"] == "GOOG" and info["n"] == GOOG_BARS
    assert info["last"].startswith("2013-03-01") and info["close"] == pytest.approx(806.19)
    names = {t[0]: t for t in info["traces"]}
    for overlay in (
        "SMA 20",
        "SMA 50",
        "EMA 12",
        "EMA 26",
        "BB upper",
        "Bollinger 20, 2σ",
        "BB mid",
    ):
        assert names[overlay][2] == "y" and names[overlay][3] == GOOG_BARS, overlay
    assert names["Volume"][2] == "y2" and names["RSI 14"][2] == "y3"
    assert (
        names["MACD"][2] == "y4"
        and names["MACD hist"][2] == "y4"
        and names["MACD signal"][2] == "y4"
    )
    assert _signal_markers(page) == 3
    assert page.locator("#chart .main-svg").count() >= 1

    # Watchlist: latest signal per symbol, newest first; clicking selects the symbol.
    rows = page.locator("#watchlist tbody tr.main-row")
    assert rows.count() == 2
    assert rows.nth(0).inner_text().split()[:3] == ["GOOG", "crp_short", "64.00"]
    assert "MSFT" in rows.nth(1).inner_text()
    rows.nth(1).click()
    page.wait_for_function(
        "() => document.getElementById('chart-title').textContent.startsWith('MSFT')"
    )
    page.wait_for_function(
        "() => document.getElementById('chart').data.find(t => t.type === 'candlestick').name === 'MSFT'"
    )
    page.locator("#watchlist tbody tr.main-row[data-symbol=GOOG]").click()
    page.wait_for_function(
        "() => document.getElementById('chart').data.find(t => t.type === 'candlestick').name === 'GOOG'"
    )

    # Ops panels: no orders yet, kill switch off, the paper account in portfolio and risk.
    page.wait_for_function(
        "() => document.getElementById('kill-switch').textContent === 'kill switch: off'"
    )
    assert page.locator("#risk-kill").inner_text().startswith("Kill switch off")
    page.wait_for_function(
        "() => /live · seq \\d+/.test(document.getElementById('ws-status').textContent)"
    )
    recent = page.locator("#feed li[data-channel=signals]").count()
    assert recent >= 3  # the recent items replayed on connect

    # Live: a new signal published as a new snapshot shows up without a reload.
    page.evaluate("() => { window.__noReload = 'still here'; }")
    max_seq = page.evaluate(
        "() => Math.max(0, ...[...document.querySelectorAll('#feed li[data-channel=signals]')].map(li => +li.dataset.seq))"
    )
    new_signal(dash_env, "GOOG", date.fromisoformat(info["last"][:10]), "crp_long", 91.0)
    dash_env.publish()
    fresh = page.locator("#feed li[data-channel=signals]").filter(has_text="GOOG crp_long 91.00")
    fresh.wait_for(timeout=8_000)
    assert int(fresh.first.get_attribute("data-seq")) > max_seq
    assert page.locator("#feed li").first.get_attribute("data-channel") in (
        "signals",
        "alerts",
    )  # prepended
    page.locator("#feed li[data-channel=alerts]").filter(
        has_text="GOOG crp long 2013-03-01"
    ).wait_for(timeout=5_000)
    page.wait_for_function(
        "() => document.querySelector('#watchlist tbody tr.main-row').innerText.includes('91.00')",
        timeout=5_000,
    )
    page.wait_for_function(
        "() => document.getElementById('chart').data.filter(t => (t.name || '').startsWith('signals ')).reduce((n, t) => n + t.x.length, 0) === 4",
        timeout=10_000,
    )
    assert page.evaluate("() => window.__noReload") == "still here"

    # A manual order through the API, then the broker fills it (as the order job would sync
    # it): the live feed, the orders table, positions and portfolio follow without a reload.
    r = httpx.post(
        f"{dash_server.url}/orders",
        headers={"X-API-Key": dash_env.key},
        json={"symbol": "GOOG", "side": "buy", "quantity": "10"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    coid = r.json()["order"]["client_order_id"]
    page.locator("#feed li[data-channel=orders]").filter(has_text="GOOG buy 10").first.wait_for(
        timeout=8_000
    )
    page.wait_for_function(
        "() => document.querySelectorAll('#orders tbody tr').length === 1", timeout=8_000
    )
    fill_broker_order(dash_env, coid, "GOOG", 10, "780.00")
    page.locator("#feed li[data-channel=orders]").filter(has_text="→ filled").wait_for(
        timeout=8_000
    )
    page.locator("#orders tbody tr .status.filled").wait_for(timeout=8_000)
    position = page.locator("#positions tbody tr[data-symbol=GOOG]")
    position.wait_for(timeout=8_000)
    cells = position.locator("td").all_inner_texts()
    assert cells[:5] == ["paper", "GOOG", "10", "780.00", "806.19"], cells
    assert cells[6] == "261.90" and "pos" in (
        position.locator("td").nth(6).get_attribute("class") or ""
    )
    page.wait_for_function(
        "() => document.querySelector('#portfolio tbody tr').innerText.includes('261.90')",
        timeout=8_000,
    )

    # The live feed drops; an order is placed before it reconnects (held off for 2 s): the
    # reconnect resumes order events after the last one shown, so it still reaches the feed.
    last_order_id = page.evaluate("() => window.tradingDashboard.state.lastOrderId")
    assert isinstance(last_order_id, int) and last_order_id > 0
    page.evaluate("() => { const s = window.tradingDashboard.state; s.wsRetry = 2; s.ws.close(); }")
    page.wait_for_function("() => window.tradingDashboard.state.ws === null", timeout=5_000)
    r = httpx.post(
        f"{dash_server.url}/orders",
        headers={"X-API-Key": dash_env.key},
        json={"symbol": "GOOG", "side": "sell", "quantity": "5"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert page.evaluate("() => window.tradingDashboard.state.ws") is None  # still disconnected
    page.locator("#feed li[data-channel=orders]").filter(has_text="GOOG sell 5").first.wait_for(
        timeout=10_000
    )
    assert page.evaluate("() => window.tradingDashboard.state.lastOrderId") > last_order_id

    page.wait_for_timeout(500)  # let the last fade-in finish for the screenshot
    shot = artifacts_dir() / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert browser_page.errors == [], browser_page.errors


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_dashboard_without_a_snapshot_says_so_then_recovers(
    empty_env: ApiEnv, empty_server: DashboardServer, browser_page: BrowserPage
) -> None:
    store = OpsStore(empty_env.store_url)
    store.set_kill_switch(True, "fat finger drill", "tests")
    store.close()
    page = browser_page.page
    page.goto(f"{empty_server.url}/?api_key={empty_env.key}", wait_until="load")
    banner = page.locator("#banner")
    banner.filter(has_text="No serving snapshot has been published yet").wait_for(timeout=10_000)
    assert page.locator("#snapshot-status").inner_text() == "snapshot: none"
    assert page.locator("#chart-empty").inner_text().startswith("Waiting for a snapshot")
    # The kill switch comes from the ops store: shown even before the first snapshot.
    page.wait_for_function(
        "() => document.getElementById('kill-switch').textContent === 'kill switch: ON'"
    )
    page.screenshot(path=str(artifacts_dir() / "dashboard-no-snapshot.png"))
    # The first publish: the page notices by itself (status poll) and draws the chart.
    empty_env.publish()
    page.wait_for_function(CANDLES, timeout=20_000)
    assert banner.is_hidden()
    assert page.evaluate(CANDLES)["n"] == GOOG_BARS
    page.wait_for_function(
        "() => document.getElementById('kill-switch').textContent === 'kill switch: ON'"
    )
    assert "fat finger drill" in page.locator("#risk-kill").inner_text()
    assert browser_page.errors == [], browser_page.errors


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_bad_key_in_chromium_shows_the_401_page(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    resp = page.goto(f"{dash_server.url}/?api_key=trd_wrong", wait_until="load")
    assert resp is not None and resp.status == 401
    assert "trading api-key create" in page.locator("body").inner_text()
    page.wait_for_function(
        "() => !location.search.includes('api_key')"
    )  # the refused key leaves the URL
    # The navigation's own 401 is logged by chromium as a failed resource; nothing else may be.
    assert [e for e in browser_page.errors if "status of 401" not in e] == []


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_reload_after_the_key_left_the_url_comes_back_to_the_dashboard(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    page.goto(f"{dash_server.url}/?api_key={dash_env.key}", wait_until="load")
    page.wait_for_function(CANDLES, timeout=20_000)
    assert "api_key" not in page.url
    # F5: "/" without a key is the 401 page, whose script re-enters with the tab's stored key.
    page.reload(wait_until="load")
    page.wait_for_function(CANDLES, timeout=20_000)
    assert "api_key" not in page.url
    assert page.evaluate(CANDLES)["n"] == GOOG_BARS
    # Only the intermediate 401 navigation may be logged (by chromium, as a failed resource),
    # and fetches the reload cut short are aborted (requestfailed ERR_ABORTED), not errors.
    unexpected = [
        e for e in browser_page.errors if "status of 401" not in e and "net::ERR_ABORTED" not in e
    ]
    assert unexpected == []


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_api_docs_render_offline_in_chromium(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    """Issue 20.2: /docs and /redoc were blank offline (their assets came from a CDN). Every
    request to another host is refused here, as it is on a machine without internet."""
    page = browser_page.page
    elsewhere: list[str] = []

    def only_this_server(route) -> None:
        if route.request.url.startswith(dash_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{dash_server.url}/docs", wait_until="load")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/signals" in p for p in paths) and any("/orders" in p for p in paths), paths
    page.goto(f"{dash_server.url}/redoc", wait_until="load")
    page.wait_for_selector("text=Signals, market data", timeout=20_000)  # the API summary, rendered
    assert page.locator("h1").first.inner_text().startswith("Trading API")
    # All that ReDoc asks of another host is the attribution logo in its sidebar footer (an
    # <img>, refused here like everything else): the docs themselves render from this server.
    assert all(u.endswith("/redoc/logo-mini.svg") for u in elsewhere), elsewhere
    assert [e for e in browser_page.errors if "logo-mini.svg" not in e] == [], browser_page.errors


def _hourly(symbol: str, start: datetime, sessions: int, hours: int = 8) -> pl.DataFrame:
    """Hourly bars on weekdays only (nights and the weekend are closed)."""
    rows, day, price = [], start, 1.10
    while len({r["session_date"] for r in rows}) < sessions:
        if day.weekday() < 5:
            for h in range(hours):
                ts = day + timedelta(hours=h)
                price += 0.001
                rows.append({"symbol": symbol, "timeframe": "1h", "ts": ts, "session_date": ts.date(),
                             "open": price, "high": price + 0.002, "low": price - 0.002, "close": price + 0.001,
                             "volume": 0.0})
        day += timedelta(days=1)
    return pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")})


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_first_load_charts_a_series_that_exists_and_errors_clear(
    dash_env: ApiEnv, browser_page: BrowserPage
) -> None:
    """Issue 20.5: the newest signal was EURUSD on 1h; the page charted EURUSD at 1d (no such
    bars): a red 404 banner and an empty chart, and banner lines piled up per symbol."""
    from trading_pipeline.serving.publish import publish_snapshot

    bars = _hourly("EURUSD", datetime(2013, 3, 4, 8), sessions=6)
    many = bars["ts"].tail(40).to_list()  # signals on the last 40 bars
    with writer(dash_env.warehouse) as con:
        upsert_bars(con, "raw.bars_intraday", bars, "test")
        for i, ts in enumerate(many):  # 40 signals on the chart, the newest of them all
            con.execute(
                "INSERT INTO marts.signals VALUES ('breakout_intraday', 'EURUSD', '1h', ?, ?, 'breakout_up', 'long', ?, "
                "'test', 1.1, NULL, 'fp', now()::TIMESTAMP)", [ts, ts.date(), float(i)])
    publish_snapshot(dash_env.warehouse, dash_env.serving_dir)
    server = DashboardServer(dash_env)
    try:
        page = browser_page.page
        page.goto(f"{server.url}/?api_key={dash_env.key}", wait_until="load")
        page.wait_for_function(CANDLES, timeout=20_000)
        info = page.evaluate(CANDLES)
        assert info["name"] == "EURUSD" and info["n"] == bars.height
        assert page.locator("#timeframe").input_value() == "1h"
        assert page.locator("#banner").is_hidden()
        # closed hours skipped: one rangebreak per night and weekend between the 6 sessions
        breaks = page.evaluate("() => document.getElementById('chart').layout.xaxis.rangebreaks")
        assert len(breaks) == 5 and all(len(b["bounds"]) == 2 for b in breaks)
        # markers thinned to the strongest 25 by default; "all" shows every one, "none" none
        markers = "() => document.getElementById('chart').data.filter(t => t.mode === 'markers').reduce((n, t) => n + t.x.length, 0)"
        assert page.evaluate(markers) == 25
        page.select_option("#markers", "all")
        page.wait_for_function(f"() => ({markers})() === 40")
        page.select_option("#markers", "none")
        page.wait_for_function(f"() => ({markers})() === 0")
        # a timeframe without bars: said in the chart area, no error banner; then it clears
        page.select_option("#timeframe", "1d")
        page.wait_for_function("() => !document.getElementById('chart-empty').hidden")
        assert "No 1d bars for EURUSD" in page.locator("#chart-empty").inner_text()
        assert page.locator("#banner").is_hidden()
        # a symbol that does not exist anywhere: one line, replaced (not piled up) by the next
        for sym in ("NOPE1", "NOPE2", "GOOG"):
            page.fill("#symbol-input", sym)
            page.click("#symbol-form button[type=submit]")
            page.wait_for_timeout(400)
        page.select_option("#timeframe", "1d")
        page.wait_for_function("() => { const c = document.getElementById('chart'); "
                               "const t = c.data && c.data.find(x => x.type === 'candlestick'); return t && t.name === 'GOOG'; }")
        assert page.locator("#banner").is_hidden(), page.locator("#banner").inner_text()
        assert [e for e in browser_page.errors if "404" not in e] == [], browser_page.errors
    finally:
        server.stop()


MARKERS = ("() => document.getElementById('chart').data.filter(t => t.mode === 'markers')"
           ".reduce((n, t) => n + t.x.length, 0)")


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_without_signals_the_first_load_charts_a_listed_series_and_symbols_move_to_a_timeframe_they_have(
    dash_env: ApiEnv, browser_page: BrowserPage
) -> None:
    """Issue 20.5: a series that exists comes from the API (GET /market-data), not only from a
    signal: with no signal at all the page still charts one; a symbol typed at a timeframe it
    has no bars for is charted at one it has, and a symbol with no bars is said so, without a
    404 in the browser's console or the banner."""
    from trading_pipeline.serving.publish import publish_snapshot

    with writer(dash_env.warehouse) as con:
        con.execute("DELETE FROM marts.signals")
        upsert_bars(con, "raw.bars_intraday", _hourly("EURUSD", datetime(2013, 3, 4, 8), sessions=3), "test")
    publish_snapshot(dash_env.warehouse, dash_env.serving_dir)
    server = DashboardServer(dash_env)
    try:
        page = browser_page.page
        not_found: list[str] = []
        page.on("response", lambda r: not_found.append(r.url) if r.status == 404 else None)
        page.goto(f"{server.url}/?api_key={dash_env.key}", wait_until="load")
        page.wait_for_function(CANDLES, timeout=20_000)
        info = page.evaluate(CANDLES)  # the first series listed: EURUSD 1h (symbols in order)
        assert info["name"] == "EURUSD" and page.locator("#timeframe").input_value() == "1h"
        candle_of = "() => document.getElementById('chart').data.find(t => t.type === 'candlestick').name"
        page.fill("#symbol-input", "GOOG")  # GOOG has daily bars only
        page.click("#symbol-form button[type=submit]")
        page.wait_for_function(f"() => ({candle_of})() === 'GOOG'")
        assert page.locator("#timeframe").input_value() == "1d"
        page.fill("#symbol-input", "NOPE")
        page.click("#symbol-form button[type=submit]")
        page.wait_for_function("() => !document.getElementById('chart-empty').hidden")
        assert page.locator("#chart-empty").inner_text() == "No bars for NOPE in the snapshot."
        page.select_option("#timeframe", "1h")  # chosen by hand: kept, said when the symbol lacks it
        page.fill("#symbol-input", "MSFT")
        page.click("#symbol-form button[type=submit]")
        page.wait_for_function(f"() => ({candle_of})() === 'MSFT'")
        assert page.locator("#timeframe").input_value() == "1d"
        page.select_option("#timeframe", "1h")
        page.wait_for_function("() => !document.getElementById('chart-empty').hidden")
        assert page.locator("#chart-empty").inner_text() == "No 1h bars for MSFT; it has 1d bars."
        assert page.locator("#banner").is_hidden()
        assert not_found == [] and browser_page.errors == [], (not_found, browser_page.errors)
    finally:
        server.stop()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_top_signal_markers_rank_within_each_scan_and_all_are_drawn(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    """Issue 20.5: markers are thinned to the strongest 25, but scores are on each scan's own
    scale: 40 narrow-CPR days scored 100 (no direction) took every place from the CRP (0-100)
    and breakout (~1-3) signals, and were not drawn either, so the chart said "25 marked" and
    showed none."""
    from trading_pipeline.serving.publish import publish_snapshot

    sessions = goog_bars()["session_date"].to_list()
    with writer(dash_env.warehouse) as con:
        add_signals(con, [("GOOG", d, "cpr_narrow", 100.0) for d in sessions[-140:-100]], scan="cpr_daily")
        con.execute("UPDATE marts.signals SET direction = 'neutral' WHERE kind = 'cpr_narrow'")
        add_signals(con, [("GOOG", d, "breakout_up", 1.0 + i / 10) for i, d in enumerate(sessions[-90:-60])],
                    scan="breakout_daily")
    publish_snapshot(dash_env.warehouse, dash_env.serving_dir)
    page = browser_page.page
    page.goto(f"{dash_server.url}/?api_key={dash_env.key}&symbol=GOOG", wait_until="load")
    page.wait_for_function(CANDLES, timeout=20_000)
    page.wait_for_function(f"() => ({MARKERS})() > 0", timeout=10_000)
    drawn = page.evaluate("""() => Object.fromEntries(document.getElementById('chart').data
        .filter(t => t.mode === 'markers').map(t => [t.name, t.x.length]))""")
    assert sum(drawn.values()) == 25, drawn
    assert set(drawn) == {"signals long", "signals short", "signals neutral"}, drawn
    assert "73 signals, 25 marked" in page.locator("#chart-sub").inner_text()
    page.select_option("#markers", "all")
    page.wait_for_function(f"() => ({MARKERS})() === 73")
    assert browser_page.errors == []
