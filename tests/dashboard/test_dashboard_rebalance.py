"""The rebalance preview panel: targets typed as symbol,weight lines, the plan POST
/rebalance/preview computes shown as a table (the same orders the API answers), errors shown,
and nothing sent to the broker. A real uvicorn server and Debian's chromium."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer
from tests.dashboard.test_dashboard_orders import open_dashboard


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_preview_shows_the_planned_orders_and_sends_nothing(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_dashboard(page, dash_server, dash_env)
    page.get_by_label("Targets", exact=False).fill("symbol,weight\nGOOG,0.5\nMSFT,0.2\n")
    page.get_by_role("button", name="Preview").click()
    page.locator("#rb-result.ok").wait_for()
    with httpx.Client(base_url=dash_server.url, headers=dash_env.headers()) as c:
        plan = c.post("/rebalance/preview", json={"targets": [{"symbol": "GOOG", "weight": "0.5"},
                                                             {"symbol": "MSFT", "weight": "0.2"}]}).json()
        assert c.get("/orders").json()["items"] == []  # a preview sends nothing
    rows = page.locator("#rb-orders tbody tr")
    assert rows.count() == len(plan["orders"]) == 2
    for i, o in enumerate(plan["orders"]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[0] == o["symbol"] and cells[1] == o["side"] == "buy"
        assert cells[2].replace(",", "") == str(int(float(o["quantity"])))
    assert "Nothing was sent" in page.locator("#rb-result").inner_text()

    page.get_by_label("Targets", exact=False).fill("GOOG,0.8\nMSFT,0.5\n")  # more than all the equity
    page.get_by_role("button", name="Preview").click()
    page.locator("#rb-result.error").wait_for()
    text = page.locator("#rb-result").inner_text()
    assert "HTTP 422" in text and "targets" in text and page.locator("#rb-orders").is_hidden()
    page.get_by_label("Targets", exact=False).fill("GOOG 0.5\n")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_function("() => /line 1: expected symbol,weight/.test(document.getElementById('rb-result').textContent)")
    assert [e for e in browser_page.errors if "status of 422" not in e] == []
