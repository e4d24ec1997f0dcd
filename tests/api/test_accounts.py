"""Several accounts over HTTP: GET /accounts, orders routed to each account's broker and limits,
an unknown account refused before anything is stored, portfolio per account and in total."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from tests.api.support import ApiEnv
from trading_api.main import create_app
from trading_pipeline.trading.store import OpsStore

ACCOUNTS = """
accounts:
  paper:
    description: every scan
    starting_cash: 100000
  small:
    starting_cash: 20000
    scans: [crp_daily]
    risk: {max_order_notional: 1000}
"""


@pytest.fixture
def accounts_client(api_env: ApiEnv, tmp_path) -> Iterator[tuple[TestClient, ApiEnv]]:
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS)
    settings = api_env.settings.model_copy(update={"accounts_file": path})
    with TestClient(create_app(settings, poll_interval=0.05, heartbeat=1.0)) as c:
        c.headers.update(api_env.headers())
        yield c, api_env


def _buy(c: TestClient, account: str, qty: str = "50") -> object:
    return c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": qty, "account": account})


def test_get_accounts_lists_each_accounts_setup_and_standing(accounts_client):
    c, _env = accounts_client
    assert _buy(c, "small").status_code == 422  # 50 GOOG is above small's 1000 notional: denied, account opened
    assert _buy(c, "paper").status_code == 201
    body = c.get("/accounts").json()
    assert body["source"].endswith("accounts.yaml") and body["default"] == "paper"
    rows = {a["name"]: a for a in body["accounts"]}
    assert rows["small"]["scans"] == ["crp_daily"] and rows["paper"]["scans"] == "all"
    assert rows["small"]["risk_overrides"] == {"max_order_notional": 1000}
    assert Decimal(rows["small"]["limits"]["max_order_notional"]) == 1000
    assert Decimal(rows["paper"]["limits"]["max_order_notional"]) == 50000  # risk.yaml's
    assert Decimal(rows["small"]["cash"]) == 20000 and Decimal(rows["paper"]["cash"]) == 100000
    assert rows["paper"]["open_orders"] == 1 and rows["small"]["open_orders"] == 0
    assert Decimal(body["total_equity"]) == Decimal(rows["small"]["equity"]) + Decimal(rows["paper"]["equity"])


def test_an_account_the_file_does_not_name_is_refused_and_nothing_stored(accounts_client):
    c, env = accounts_client
    r = _buy(c, "elsewhere")
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "account"] and "no account 'elsewhere'" in err["msg"] and "known: paper, small" in err["msg"]
    assert OpsStore(env.store_url).list_orders(account="elsewhere") == [] and "elsewhere" not in OpsStore(env.store_url).list_accounts()


def test_each_account_has_its_own_limits(accounts_client):
    c, _env = accounts_client
    small = _buy(c, "small")
    assert small.status_code == 422 and small.json()["detail"]["rule"] == "max_order_notional"
    assert _buy(c, "paper").status_code == 201  # the same order within risk.yaml's limits
    risk = c.get("/risk").json()
    usage = {u["account"]: u for u in risk["usage"]}
    assert Decimal(usage["small"]["limits"]["max_order_notional"]) == 1000 and usage["paper"]["limits"] is None


def test_portfolio_per_account_and_in_total(accounts_client):
    c, _env = accounts_client
    _buy(c, "paper")
    c.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": "1", "account": "small"})
    body = c.get("/portfolio").json()
    assert {a["account"] for a in body["accounts"]} == {"paper", "small"}
    assert body["total"]["accounts"] == 2
    assert Decimal(body["total"]["cash"]) == sum(Decimal(a["cash"]) for a in body["accounts"]) == 120000
    one = c.get("/portfolio", params={"account": "small"}).json()
    assert one["total"]["accounts"] == 1 and Decimal(one["total"]["equity"]) == Decimal(one["accounts"][0]["equity"])


def test_orders_of_an_account_removed_from_the_file_cannot_be_modified_or_cancelled_blindly(accounts_client, tmp_path):
    c, _env = accounts_client
    coid = _buy(c, "paper").json()["order"]["client_order_id"]
    (tmp_path / "accounts.yaml").write_text("accounts:\n  small: {}\n")  # 'paper' removed while its order works
    r = c.delete(f"/orders/{coid}")
    assert r.status_code == 409 and "put the account back in the accounts file" in r.json()["detail"]
    r = c.patch(f"/orders/{coid}", json={"quantity": "3"})
    assert r.status_code == 409 and "no account 'paper'" in r.json()["detail"]
    assert c.get(f"/orders/{coid}").json()["status"] in ("accepted", "new")


def test_a_broken_accounts_file_is_a_503_naming_the_setting(accounts_client, tmp_path):
    c, _env = accounts_client
    (tmp_path / "accounts.yaml").write_text("accounts: [")
    r = c.get("/accounts")
    assert r.status_code == 503 and "not valid YAML" in r.json()["detail"]
    r = _buy(c, "paper")
    assert r.status_code == 503 and "accounts" in r.json()["detail"]
