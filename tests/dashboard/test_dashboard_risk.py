"""The portfolio risk panel: VaR / ES (1-day and N-day) and the stress scenarios of the total
portfolio, as GET /risk/assessment computes them from the warehouse's bars and the ops store's
positions. A real uvicorn server and Debian's chromium."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer
from tests.trading.test_portfolio_risk_cli import book_positions


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_panel_shows_the_assessment_of_the_total_portfolio(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    book_positions(dash_env.store_url, {"paper": {"GOOG": 10}, "second": {"GOOG": -4}})
    with httpx.Client(base_url=dash_server.url, headers=dash_env.headers()) as c:
        total = c.get("/risk/assessment").json()["total"]
    assert total["var_95"] > 0 and total["scenarios"]
    page = browser_page.page
    page.goto(f"{dash_server.url}/?api_key={dash_env.key}", wait_until="load")  # (orders exist: not open_dashboard)
    page.wait_for_function("() => document.querySelectorAll('#pr-var tbody tr').length === 2")
    one_day = page.locator("#pr-var tbody tr").first.locator("td").all_inner_texts()
    assert one_day[0] == "1 day"
    assert one_day[1:] == [f"{total[k]:,.2f}" for k in ("var_95", "es_95", "var_99", "es_99")]
    assert f"{total['sessions']} daily returns" in page.locator("#pr-summary").inner_text()
    rows = page.locator("#pr-scenarios tbody tr")
    assert rows.count() == len(total["scenarios"])
    first = total["scenarios"][0]
    cells = page.locator(f'#pr-scenarios tbody tr[data-scenario="{first["name"]}"] td').all_inner_texts()
    assert cells[0] == first["name"] and cells[3] == (first["worst_symbol"] or "")
    assert browser_page.errors == []

    # a position with too little history (MSFT: 80 sessions): the panel says why, no numbers
    book_positions(dash_env.store_url, {"third": {"MSFT": 5}})
    page.evaluate("window.tradingDashboard.reload()")
    page.wait_for_function("() => document.querySelectorAll('#pr-var tbody tr').length === 0")
    assert "MSFT" in page.locator("#pr-summary").inner_text()
