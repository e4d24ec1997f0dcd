"""Key scopes on the dashboard (issue 19), in Debian's chromium against a real server: an admin
key gets a kill switch toggle behind a confirmation dialog; a read-only key gets no order
entry and no toggle; a trade key gets order entry but no toggle.

The page learns its key's scope from GET /me; what it shows is checked in the browser, what
it changed is checked through the API (GET /kill-switch) and the ops store.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer, artifacts_dir
from trading_api.keys import create_key
from trading_pipeline.trading.store import OpsStore

WORKING_ORDER = {"symbol": "GOOG", "side": "buy", "quantity": "2", "order_type": "limit", "limit_price": "790",
                 "time_in_force": "gtc"}


@pytest.fixture
def scoped_keys(dash_env: ApiEnv) -> dict[str, str]:
    store = OpsStore(dash_env.store_url)
    keys = {"trade": dash_env.key, "read": create_key(store, "wallboard", "read")[1],
            "admin": create_key(store, "desk-head", "admin")[1]}
    store.close()
    return keys


def kill_switch(server: DashboardServer, key: str) -> dict:
    r = httpx.get(f"{server.url}/kill-switch", headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def open_as(page, server: DashboardServer, key: str, scope: str) -> None:
    page.goto(f"{server.url}/?api_key={key}", wait_until="load")
    page.wait_for_function(f"() => document.body.dataset.scope === '{scope}'", timeout=15_000)
    page.wait_for_function("() => !document.getElementById('orders-empty').hidden || "
                           "document.querySelectorAll('#orders tbody tr').length > 0", timeout=15_000)


def test_admin_engages_and_releases_the_kill_switch_through_the_dialog(
    dash_server: DashboardServer, dash_env: ApiEnv, scoped_keys: dict[str, str], browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_as(page, dash_server, scoped_keys["admin"], "admin")
    toggle = page.locator("#kill-toggle")
    toggle.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('kill-toggle').dataset.engaged === 'false'")
    assert toggle.inner_text() == "Engage kill switch…"
    assert page.locator("#order-form").is_visible()  # an admin may trade too

    # Go back: nothing is sent
    toggle.click()
    dialog = page.locator("#kill-confirm")
    assert dialog.is_visible() and "Engage the kill switch?" in dialog.inner_text()
    dialog.get_by_role("button", name="Go back").click()
    assert not dialog.is_visible()
    assert kill_switch(dash_server, scoped_keys["read"])["engaged"] is False

    # no reason: the dialog says so and stays open; nothing is sent
    toggle.click()
    page.locator("#kill-confirm-ok").click()
    assert page.locator("#kill-error").is_visible() and "reason" in page.locator("#kill-error").inner_text()
    assert dialog.is_visible() and kill_switch(dash_server, scoped_keys["read"])["engaged"] is False

    # with a reason: engaged, recorded with the key's name, shown on the page
    dialog.get_by_label("Reason (recorded with your key's name)").fill("halt before the earnings call")
    page.screenshot(path=str(artifacts_dir() / "dashboard_kill_switch_confirm.png"))
    page.locator("#kill-confirm-ok").click()
    dialog.wait_for(state="hidden")
    page.wait_for_function("() => document.getElementById('kill-toggle').dataset.engaged === 'true'")
    assert toggle.inner_text() == "Release kill switch…"
    assert "api:desk-head" in page.locator("#kill-note").inner_text()
    page.wait_for_function("() => document.getElementById('kill-switch').textContent === 'kill switch: ON'")
    assert "halt before the earnings call" in page.locator("#risk-kill").inner_text()
    ks = kill_switch(dash_server, scoped_keys["read"])
    assert ks["engaged"] is True and ks["updated_by"] == "api:desk-head" and ks["reason"] == "halt before the earnings call"
    store = OpsStore(dash_env.store_url)
    assert store.kill_switch().active is True  # the row the risk engine and `trading kill-switch` read
    store.close()
    r = httpx.post(f"{dash_server.url}/orders", json=WORKING_ORDER, headers={"X-API-Key": scoped_keys["trade"]}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"]["rule"] == "kill_switch"

    # and released the same way
    toggle.click()
    assert "Release the kill switch?" in dialog.inner_text()
    dialog.get_by_label("Reason (recorded with your key's name)").fill("earnings out")
    page.locator("#kill-confirm-ok").click()
    dialog.wait_for(state="hidden")
    page.wait_for_function("() => document.getElementById('kill-toggle').dataset.engaged === 'false'")
    page.wait_for_function("() => document.getElementById('kill-switch').textContent === 'kill switch: off'")
    assert kill_switch(dash_server, scoped_keys["read"])["engaged"] is False
    assert browser_page.errors == []


def test_read_key_sees_no_order_entry_and_no_toggle(
    dash_server: DashboardServer, dash_env: ApiEnv, scoped_keys: dict[str, str], browser_page: BrowserPage
) -> None:
    r = httpx.post(f"{dash_server.url}/orders", json=WORKING_ORDER, headers={"X-API-Key": scoped_keys["trade"]}, timeout=10)
    assert r.status_code == 201, r.text
    page = browser_page.page
    open_as(page, dash_server, scoped_keys["read"], "read")
    row = page.locator("#orders tbody tr").first
    row.wait_for(state="visible")
    assert "GOOG" in row.inner_text()
    assert row.locator("button").count() == 2  # Modify and Cancel are in the row...
    assert not row.locator("button.modify").is_visible() and not row.locator("button.cancel").is_visible()  # ...hidden
    assert not page.locator(".ticket-panel").is_visible() and not page.locator("#order-form").is_visible()
    assert page.locator("#kill-toggle").count() == 0 and page.locator("#kill-confirm").count() == 0
    # what a read key may see is all there: risk panel, kill switch state, rebalance preview
    assert page.locator("#risk-kill").is_visible() and page.locator("#rb-form").is_visible()
    page.wait_for_function("() => /kill switch: (ON|off)/.test(document.getElementById('kill-switch').textContent)")
    page.screenshot(path=str(artifacts_dir() / "dashboard_read_only_key.png"))
    assert browser_page.errors == []


def test_trade_key_sees_order_entry_but_no_toggle(
    dash_server: DashboardServer, scoped_keys: dict[str, str], browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_as(page, dash_server, scoped_keys["trade"], "trade")
    assert page.locator("#order-form").is_visible()
    assert page.locator("#kill-toggle").count() == 0
    assert browser_page.errors == []
