"""POST /rebalance/preview: the orders a rebalance would place, priced at the snapshot's last
closes, nothing sent; bad targets are 422 with the reason."""

from __future__ import annotations

from decimal import Decimal

from trading_pipeline.trading.store import OpsStore


def test_preview_computes_the_orders_and_sends_nothing(client, api_env):
    body = {"targets": [{"symbol": "GOOG", "weight": 0.2}, {"symbol": "msft", "weight": "0.1"}],
            "min_trade": 0, "drift_band": 0}
    r = client.post("/rebalance/preview", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    # the paper account's 100,000 at the last closes GOOG 129.5, MSFT 179.5:
    # 20,000 / 129.5 = 154.4 -> 154; 10,000 / 179.5 = 55.7 -> 55
    assert Decimal(str(out["equity"])) == 100000 and out["account"] == api_env.settings.account
    assert [(o["symbol"], o["side"], o["quantity"]) for o in out["orders"]] == [("GOOG", "buy", "154"), ("MSFT", "buy", "55")]
    assert Decimal(str(out["orders"][0]["price"])) == Decimal("129.5")
    assert Decimal(str(out["cash_after"])) == 100000 - 154 * Decimal("129.5") - 55 * Decimal("179.5")
    assert out["orders"][0]["client_order_id"].startswith("rb-")
    store = OpsStore(api_env.store_url)
    try:
        assert store.list_orders() == []
    finally:
        store.close()
    # the default drift band (0.5 points) and minimum trade (100) apply when not given
    small = client.post("/rebalance/preview", json={"targets": [{"symbol": "GOOG", "weight": 0.004}]}).json()
    assert small["orders"] == [] and "within the drift band" in small["skipped"][0]["reason"]


def test_bad_targets_are_422_with_the_reason(client):
    def detail(body):
        r = client.post("/rebalance/preview", json=body)
        assert r.status_code == 422, r.text
        return str(r.json()["detail"])

    assert "weights sum to 1.2, above 1" in detail({"targets": [{"symbol": "GOOG", "weight": 0.6}, {"symbol": "MSFT", "weight": 0.6}]})
    assert "targets item 1 (GOOG): duplicate symbol, first given at item 0" in detail(
        {"targets": [{"symbol": "GOOG", "weight": 0.1}, {"symbol": "goog", "weight": 0.1}]})
    assert "no last close for NOPE" in detail({"targets": [{"symbol": "NOPE", "weight": 0.1}]})
    detail({"targets": [{"symbol": "GOOG", "weight": -0.1}]})
    detail({"targets": [{"symbol": "GOOG", "weight": "NaN"}]})
    detail({"targets": []})
    detail({"targets": [{"symbol": "GOOG", "weight": 0.1}], "drift_band": 100})


def test_preview_needs_a_key(client):
    client.headers.pop("X-API-Key", None)
    client.headers.pop("Authorization", None)
    assert client.post("/rebalance/preview", json={"targets": [{"symbol": "GOOG", "weight": 0.1}]}).status_code == 401
