"""The chart's raw-prices toggle: adjusted bars by default, the bars as loaded when ticked."""

from __future__ import annotations

import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer
from trading_pipeline.marketdata.warehouse import writer

CLOSES = """() => {
  const d = document.getElementById('chart');
  const c = d && d.data && d.data.find(t => t.type === 'candlestick');
  return c ? {n: c.x.length, first: c.close[0], last: c.close[c.close.length - 1],
              lines: d.data.filter(t => t.type === 'scatter' && t.mode === 'lines').length} : null;
}"""


@pytest.mark.timeout(90)
def test_raw_prices_toggle_charts_the_bars_as_loaded(dash_env: ApiEnv, browser_page: BrowserPage) -> None:
    from trading_pipeline.serving.publish import publish_snapshot

    with writer(dash_env.warehouse) as con:  # GOOG's raw bars unadjusted for a 2:1 split before its last 100
        cut = con.execute("SELECT ts FROM raw.bars_daily WHERE symbol = 'GOOG' ORDER BY ts DESC LIMIT 1 OFFSET 100").fetchone()[0]
        con.execute("UPDATE raw.bars_daily SET open = open * 2, high = high * 2, low = low * 2, close = close * 2 "
                    "WHERE symbol = 'GOOG' AND ts <= ?", [cut])
    publish_snapshot(dash_env.warehouse, dash_env.serving_dir)
    server = DashboardServer(dash_env)
    try:
        page = browser_page.page
        page.goto(f"{server.url}/?api_key={dash_env.key}", wait_until="load")
        page.fill("#symbol-input", "GOOG")
        page.click("#symbol-form button[type=submit]")
        page.wait_for_function(f"() => {{ const c = ({CLOSES})(); return c && c.n > 150; }}", timeout=20_000)
        adjusted = page.evaluate(CLOSES)
        assert "raw prices" not in page.locator("#chart-sub").inner_text()
        page.check("#raw-prices")
        page.wait_for_function("() => document.getElementById('chart-sub').textContent.includes('raw prices')")
        raw = page.evaluate(CLOSES)
        assert raw["n"] == adjusted["n"]
        assert raw["first"] == pytest.approx(2 * adjusted["first"])  # before the "split": doubled
        assert raw["last"] == pytest.approx(adjusted["last"])  # after it: the same
        assert adjusted["lines"] > 0 and raw["lines"] == 0  # no indicator overlays on raw bars
        page.uncheck("#raw-prices")
        page.wait_for_function("() => !document.getElementById('chart-sub').textContent.includes('raw prices')")
        assert page.evaluate(CLOSES)["first"] == pytest.approx(adjusted["first"])
        assert browser_page.errors == [], browser_page.errors
    finally:
        server.stop()
