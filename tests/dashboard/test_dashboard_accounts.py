"""Several accounts on the dashboard: the ticket suggests the accounts GET /accounts lists and
starts on the default one; an order placed for another account lands there; the portfolio
panel shows each account and their total. A real uvicorn server (with TRADING_ACCOUNTS_FILE)
and Debian's chromium."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer
from tests.dashboard.test_dashboard_orders import (
    confirm,
    fill_ticket,
    open_dashboard,
    placed_id,
    review,
)

ACCOUNTS = """
accounts:
  paper: {description: every scan}
  swing:
    description: breakouts only
    starting_cash: 50000
    scans: [breakout_daily]
"""


@pytest.fixture
def accounts_server(dash_env: ApiEnv) -> Iterator[DashboardServer]:
    path = dash_env.home / "accounts.yaml"
    path.write_text(ACCOUNTS)
    s = DashboardServer(dash_env, extra_env={"TRADING_ACCOUNTS_FILE": str(path)})
    yield s
    s.stop()


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_ticket_offers_the_accounts_and_the_portfolio_shows_the_total(
    dash_env: ApiEnv, accounts_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_dashboard(page, accounts_server, dash_env)
    page.wait_for_function("() => document.querySelectorAll('#order-accounts option').length === 2")
    options = page.eval_on_selector_all("#order-accounts option", "os => os.map(o => [o.value, o.label])")
    assert options == [["paper", "paper · paper · every scan"], ["swing", "swing · paper · breakouts only"]]
    ticket_account = page.locator("#order-account")  # (the rebalance panel has an Account field too)
    assert ticket_account.input_value() == "paper"  # GET /accounts' default

    fill_ticket(page, quantity="2", order_type="market", tif="day")
    ticket_account.fill("swing")
    review(page)
    confirm(page, "Send order")
    coid = placed_id(page)
    with httpx.Client(base_url=accounts_server.url, headers=dash_env.headers()) as c:
        assert c.get(f"/orders/{coid}").json()["account"] == "swing"
        c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1", "account": "paper"})
        total = c.get("/portfolio").json()["total"]
    assert Decimal(total["cash"]) == 150000
    page.evaluate("window.tradingDashboard.reload()")
    last = page.locator("#portfolio tbody tr.total")
    last.wait_for()
    assert last.locator("td").first.inner_text() == "Total (2)"
    assert "150,000.00" in last.inner_text()
