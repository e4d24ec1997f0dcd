"""Order entry on the dashboard (issue 14): the ticket, the confirmation dialog, Modify and
Cancel on working orders, in Debian's chromium against a real server.

Every write goes through the page (its form, its dialog, its buttons); the ops store is
checked through the API (``GET /orders``) with the same key. Risk limits are the project's
``risk.yaml`` (``max_order_notional: 50000``, ``price_collar_pct: 5``); GOOG's last close in
the fixture warehouse is 806.19, so a limit of 790 is inside the collar and stays working
on the paper broker.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import ApiEnv
from tests.dashboard.conftest import BrowserPage, DashboardServer, artifacts_dir

WORKING = ("new", "accepted", "partially_filled")


def stored_orders(server: DashboardServer, env: ApiEnv) -> dict[str, dict]:
    r = httpx.get(f"{server.url}/orders?limit=1000", headers={"X-API-Key": env.key}, timeout=10)
    assert r.status_code == 200, r.text
    return {o["client_order_id"]: o for o in r.json()["items"]}


def open_dashboard(page, server: DashboardServer, env: ApiEnv) -> None:
    page.goto(f"{server.url}/?api_key={env.key}", wait_until="load")
    # The first orders load has rendered (none yet) and the live feed is up.
    page.wait_for_function("() => !document.getElementById('orders-empty').hidden", timeout=15_000)
    page.wait_for_function(
        "() => /live · seq \\d+/.test(document.getElementById('ws-status').textContent)", timeout=15_000
    )


def fill_ticket(page, *, symbol: str = "GOOG", side: str = "buy", quantity: str = "2", order_type: str = "limit",
                limit: str | None = None, stop: str | None = None, tif: str = "gtc",
                bracket: tuple[str, str] | None = None) -> None:
    """Fill the ticket through its labels (each control has a <label for>)."""
    form = page.locator("#order-form")
    form.get_by_label("Symbol").fill(symbol)
    form.get_by_label("Side").select_option(side)
    form.get_by_label("Quantity").fill(quantity)
    form.get_by_label("Type").select_option(order_type)
    if limit is not None:
        form.get_by_label("Limit price").fill(limit)
    if stop is not None:
        form.get_by_label("Stop price").fill(stop)
    form.get_by_label("Time in force").select_option(tif)
    box = form.get_by_label("Bracket (take-profit and stop-loss exits)")
    if bracket:
        box.check()
        form.get_by_label("Take-profit price").fill(bracket[0])
        form.get_by_label("Stop-loss price").fill(bracket[1])
    elif box.is_enabled():
        box.uncheck()


def review(page) -> None:
    page.get_by_role("button", name="Review order…").click()
    page.locator("#confirm[open]").wait_for()


def confirm(page, button: str) -> None:
    """Answer the open confirmation dialog with one of its buttons."""
    page.locator("#confirm[open]").get_by_role("button", name=button, exact=True).click()


def placed_id(page) -> str:
    result = page.locator("#order-result.ok")
    result.wait_for(timeout=10_000)
    coid = result.get_attribute("data-coid")
    assert coid, result.inner_text()
    return coid


def row(page, coid: str):
    return page.locator(f'#orders tbody tr[data-coid="{coid}"]:not(.modify-row)')


def only_expected_errors(errors: list[str], *statuses: int) -> list[str]:
    """Chromium logs every 4xx answer to fetch as a console error: the refusals a test provokes
    on purpose are expected, nothing else is."""
    return [e for e in errors if not any(f"status of {s}" in e for s in statuses)]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_place_modify_and_cancel_a_limit_order_from_the_page(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_dashboard(page, dash_server, dash_env)
    # The ticket follows the chart's symbol; the fields shown are the ones the type needs.
    page.wait_for_function("() => document.getElementById('order-symbol').value === 'GOOG'")
    form = page.locator("#order-form")
    assert form.get_by_label("Limit price").is_hidden() and form.get_by_label("Stop price").is_hidden()
    form.get_by_label("Type").select_option("stop_limit")
    assert form.get_by_label("Limit price").is_visible() and form.get_by_label("Stop price").is_visible()
    assert page.locator("#order-tif option[value=ioc]").is_disabled()  # ioc/opg: market and limit only
    assert form.get_by_label("Bracket (take-profit and stop-loss exits)").is_hidden()
    form.get_by_label("Type").select_option("trailing_stop")
    assert form.get_by_label("Trail", exact=True).is_visible() and form.get_by_label("Trail by").is_visible()
    assert form.get_by_label("Limit price").is_hidden()

    # Going back from the confirmation sends nothing; so does Escape.
    fill_ticket(page, limit="790.00")
    review(page)
    confirm(page, "Go back")
    assert page.locator("#confirm").is_hidden()
    assert "Not sent" in page.locator("#order-result").inner_text()
    review(page)
    page.keyboard.press("Escape")
    assert page.locator("#confirm").is_hidden()
    assert stored_orders(dash_server, dash_env) == {}

    # Place it: the dialog summarises the order, then the result names the order and status.
    review(page)
    page.screenshot(path=str(artifacts_dir() / "dashboard-order-confirm.png"))
    summary = page.locator("#confirm-summary").inner_text()
    assert "Buy 2 GOOG" in summary and "Limit price\n790.00" in summary and "GTC" in summary, summary
    assert "paper" in summary and "1,580.00" in summary, summary
    confirm(page, "Send order")
    coid = placed_id(page)
    assert "accepted" in page.locator("#order-result").inner_text()
    stored = stored_orders(dash_server, dash_env)
    assert list(stored) == [coid]
    order = stored[coid]
    assert (order["symbol"], order["side"], order["quantity"], order["order_type"], order["limit_price"],
            order["time_in_force"], order["status"]) == ("GOOG", "buy", "2", "limit", "790.00", "gtc", "accepted")
    r = row(page, coid)
    r.wait_for(timeout=20_000)
    assert "limit 790.00" in r.locator("td.price").inner_text()
    assert r.locator(".status").inner_text() == "accepted"

    # Modify its limit price inline: confirm, PATCH, the new price in the table and the store.
    r.get_by_role("button", name=f"Modify order {coid}").click()
    editor = page.get_by_role("form", name=f"Modify order {coid}")
    editor.get_by_label("Limit price").fill("795.50")
    assert editor.get_by_label("Quantity").input_value() == "2"
    editor.get_by_role("button", name="Review change…").click()
    page.locator("#confirm[open]").wait_for()
    assert "790.00 → 795.50" in page.locator("#confirm-summary").inner_text()
    confirm(page, "Send change")
    page.wait_for_function(
        f"""() => {{ const r = document.querySelector('#orders tbody tr[data-coid="{coid}"] td.price');
                    return r && r.textContent.includes('795.50'); }}""",
        timeout=8_000,
    )
    assert page.locator("#orders-result.ok").inner_text().startswith(f"Modified {coid}")
    assert page.locator("tr.modify-row").count() == 0
    assert stored_orders(dash_server, dash_env)[coid]["limit_price"] == "795.50"

    # Cancel: "Keep order" sends nothing; "Cancel order" does, and the row says cancelled.
    r.get_by_role("button", name=f"Cancel order {coid}").click()
    page.locator("#confirm[open]").wait_for()
    confirm(page, "Keep order")
    assert stored_orders(dash_server, dash_env)[coid]["status"] == "accepted"
    r.get_by_role("button", name=f"Cancel order {coid}").click()
    page.locator("#confirm[open]").wait_for()
    assert coid in page.locator("#confirm-summary").inner_text()
    confirm(page, "Cancel order")
    page.wait_for_function(
        f"""() => {{ const s = document.querySelector('#orders tbody tr[data-coid="{coid}"] .status');
                    return s && s.textContent === 'cancelled'; }}""",
        timeout=8_000,
    )
    assert r.get_by_role("button").count() == 0  # no actions on an order that is not working
    assert stored_orders(dash_server, dash_env)[coid]["status"] == "cancelled"

    # An order cancelled elsewhere (the API, another tab): the WebSocket push refreshes the row
    # well before the 15 s poll, and its actions go.
    r2 = httpx.post(f"{dash_server.url}/orders", headers={"X-API-Key": dash_env.key}, timeout=10,
                    json={"symbol": "GOOG", "side": "buy", "quantity": "1", "order_type": "limit",
                          "limit_price": "780", "time_in_force": "gtc"})
    assert r2.status_code == 201, r2.text
    other = r2.json()["order"]["client_order_id"]
    row(page, other).get_by_role("button", name=f"Cancel order {other}").wait_for(timeout=5_000)
    assert httpx.delete(f"{dash_server.url}/orders/{other}", headers={"X-API-Key": dash_env.key}, timeout=10).status_code == 200
    row(page, other).locator(".status.cancelled").wait_for(timeout=5_000)
    assert row(page, other).get_by_role("button").count() == 0
    assert browser_page.errors == [], browser_page.errors


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_bracket_from_the_page_shows_its_exits(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_dashboard(page, dash_server, dash_env)
    fill_ticket(page, limit="790", bracket=("830", "750"))
    review(page)
    assert "take-profit 830 · stop-loss 750" in page.locator("#confirm-summary").inner_text()
    confirm(page, "Send order")
    coid = placed_id(page)
    exits = page.get_by_role("list", name="Bracket exits").locator("li")
    assert exits.count() == 2
    texts = exits.all_inner_texts()
    assert texts[0].startswith(f"take-profit: {coid}-tp") and "Sell 2 GOOG limit (limit 830)" in texts[0], texts
    assert texts[1].startswith(f"stop-loss: {coid}-sl") and "Sell 2 GOOG stop (stop 750)" in texts[1], texts
    stored = stored_orders(dash_server, dash_env)
    assert set(stored) == {coid, f"{coid}-tp", f"{coid}-sl"}
    assert sorted(stored[coid]["children"]) == [f"{coid}-sl", f"{coid}-tp"]
    # In the table: the entry says it carries a bracket, the exits say which they are.
    row(page, f"{coid}-tp").wait_for(timeout=20_000)
    assert "limit + bracket" in row(page, coid).locator("td.type").inner_text()
    assert row(page, f"{coid}-tp").locator("td.type").inner_text().startswith("↳ take-profit")
    assert row(page, f"{coid}-sl").locator("td.type").inner_text().startswith("↳ stop-loss")
    # Cancelling the entry cancels its exits with it (the dialog says so).
    row(page, coid).get_by_role("button", name=f"Cancel order {coid}").click()
    page.locator("#confirm[open]").wait_for()
    assert "cancelled with it" in page.locator("#confirm-summary").inner_text()
    confirm(page, "Cancel order")
    for c in (coid, f"{coid}-tp", f"{coid}-sl"):
        row(page, c).locator(".status.cancelled").wait_for(timeout=20_000)
    assert {o["status"] for o in stored_orders(dash_server, dash_env).values()} == {"cancelled"}
    page.screenshot(path=str(artifacts_dir() / "dashboard-orders.png"), full_page=True)
    assert browser_page.errors == [], browser_page.errors


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_refusals_are_shown_with_the_http_status_and_the_risk_rule(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    open_dashboard(page, dash_server, dash_env)
    # 100 x 790 = 79,000 > max_order_notional 50,000: denied by that rule, shown by name.
    fill_ticket(page, quantity="100", limit="790")
    review(page)
    confirm(page, "Send order")
    err = page.locator("#order-result.error")
    err.wait_for(timeout=10_000)
    assert err.get_attribute("data-http-status") == "422" and err.get_attribute("data-rule") == "max_order_notional"
    text = err.inner_text()
    assert "HTTP 422" in text and "Denied by risk rule max_order_notional" in text, text
    assert err.locator("code.rule").inner_text() == "max_order_notional"
    stored = stored_orders(dash_server, dash_env)
    assert [o["status"] for o in stored.values()] == ["denied"]  # recorded, never sent
    # The risk panel's recent rejections follow.
    page.locator("#risk-events tbody tr").filter(has_text="max_order_notional").wait_for(timeout=20_000)
    page.screenshot(path=str(artifacts_dir() / "dashboard-order-denied.png"), full_page=True)

    # A malformed order (a stop at the market) is a field error, said with its field.
    fill_ticket(page, order_type="stop", stop="700", limit=None)
    review(page)
    confirm(page, "Send order")
    page.wait_for_function("() => document.querySelector('#order-result.error .message li') !== null", timeout=10_000)
    text = page.locator("#order-result").inner_text()
    assert "HTTP 422" in text and "stop_price: " in text and "above the market" in text, text
    assert page.locator("#order-result").get_attribute("data-rule") is None

    # A modify that a risk rule refuses leaves the order as it was, and names the rule.
    fill_ticket(page, limit="790")
    review(page)
    confirm(page, "Send order")
    coid = placed_id(page)
    row(page, coid).get_by_role("button", name=f"Modify order {coid}").click()
    editor = page.get_by_role("form", name=f"Modify order {coid}")
    editor.get_by_label("Quantity").fill("5000")
    editor.get_by_role("button", name="Review change…").click()
    page.locator("#confirm[open]").wait_for()
    confirm(page, "Send change")
    err = page.locator("#orders-result.error")
    err.wait_for(timeout=10_000)
    assert "HTTP 422" in err.inner_text() and err.get_attribute("data-rule") == "max_order_notional"
    assert stored_orders(dash_server, dash_env)[coid]["quantity"] == "2"
    assert page.locator("tr.modify-row").count() == 1  # still open, to fix the terms
    assert only_expected_errors(browser_page.errors, 422) == [], browser_page.errors


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_sending_again_after_no_answer_does_not_place_a_second_order(
    dash_env: ApiEnv, dash_server: DashboardServer, browser_page: BrowserPage
) -> None:
    """The POST reaches the server but the answer is lost (the connection drops): sending the
    same order again reuses its Idempotency-Key, and the API answers with the first order."""
    page = browser_page.page
    open_dashboard(page, dash_server, dash_env)
    lost: list[str] = []

    def lose_the_answer(route) -> None:
        if route.request.method == "POST" and not lost:
            route.fetch()  # the server places the order...
            lost.append(route.request.headers["idempotency-key"])
            route.abort("connectionreset")  # ...and the page never hears back
        else:
            route.continue_()

    page.route("**/orders", lose_the_answer)
    fill_ticket(page, limit="790")
    review(page)
    confirm(page, "Send order")
    err = page.locator("#order-result.error")
    err.wait_for(timeout=10_000)
    assert "no answer" in err.inner_text() and "cannot reach the API" in err.inner_text()
    assert len(stored_orders(dash_server, dash_env)) == 1
    review(page)
    confirm(page, "Send order")
    coid = placed_id(page)
    assert page.locator("#order-result").inner_text().startswith("Already placed:")
    assert list(stored_orders(dash_server, dash_env)) == [coid]
    assert lost and lost[0].startswith("dash-")
    assert [e for e in browser_page.errors if "ERR_CONNECTION_RESET" not in e] == [], browser_page.errors
