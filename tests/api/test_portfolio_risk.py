"""GET /risk/assessment over a real published snapshot and a real ops store."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.trading.test_portfolio_risk_cli import book_positions, write_bars
from trading_api.main import create_app


@pytest.fixture
def risk_client(api_env, tmp_path) -> Iterator[tuple[TestClient, dict[str, float]]]:
    last = write_bars(api_env.warehouse)
    api_env.publish()
    book_positions(api_env.store_url)
    scen = tmp_path / "scen.yaml"
    scen.write_text("hypothetical:\n  - {name: BBB -30%, shocks: {BBB: -30%}}\n")
    settings = api_env.settings.model_copy(update={"risk_window": 40, "risk_horizon": 9, "scenarios_file": scen})
    with TestClient(create_app(settings, poll_interval=0.05, heartbeat=1.0)) as c:
        c.headers.update(api_env.headers())
        yield c, last


def test_assessment_per_account_and_total(risk_client) -> None:
    client, last = risk_client
    r = client.get("/risk/assessment")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["benchmark"] == "SPY" and body["window"] == 40 and body["horizon_days"] == 9
    accts = {a["account"]: a for a in body["accounts"]}
    assert {"paper", "second"} <= set(accts)
    paper = accts["paper"]
    assert paper["horizon"]["var_99"] == pytest.approx(paper["var_99"] * 3)
    assert paper["es_95"] >= paper["var_95"] > 0
    covid = next(s for s in paper["scenarios"] if s["name"] == "2020 Covid crash")
    assert covid["sources"] == {"own": ["AAA"], "benchmark_beta": ["BBB"]}
    assert covid["pnl"] == pytest.approx(10 * last["AAA"] * -0.2 + -5 * last["BBB"] * 2 * -0.3)
    assert {p["symbol"]: p["source"] for p in covid["positions"]} == {"AAA": "own", "BBB": "benchmark_beta"}
    assert "return" in covid["positions"][0]
    shock = paper["scenarios"][-1]
    assert shock["name"] == "BBB -30%" and shock["pnl"] == pytest.approx(-5 * last["BBB"] * -0.3)
    assert shock["worst_symbol"] == "AAA" and shock["worst_pnl"] == 0
    assert body["total"]["account"] == "total"
    assert body["total"]["exposure"]["long"] == pytest.approx(14 * last["AAA"])
    one = client.get("/risk/assessment", params={"account": "second", "window": 30, "horizon": 1}).json()
    assert [a["account"] for a in one["accounts"]] == ["second"] and one["window"] == 30
    assert one["total"]["var_95"] == pytest.approx(one["accounts"][0]["var_95"])
    assert one["accounts"][0]["horizon"]["var_95"] == pytest.approx(one["accounts"][0]["var_95"] * math.sqrt(1))


def test_assessment_errors(risk_client) -> None:
    client, _last = risk_client
    r = client.get("/risk/assessment", params={"account": "nobody"})
    assert r.status_code == 404 and "no account 'nobody'" in r.json()["detail"]
    assert client.get("/risk/assessment", params={"window": 1}).status_code == 422
    body = client.get("/risk/assessment", params={"window": 250}).json()
    paper = next(a for a in body["accounts"] if a["account"] == "paper")
    assert "not enough history for a 250-session window" in paper["error"] and paper["var_95"] is None
    assert paper["sessions_by_symbol"] == {"AAA": 390, "BBB": 65}
    assert client.get("/risk/assessment", headers={"X-API-Key": "wrong"}).status_code == 401
