"""GET /metrics on the real app: request counters, WebSocket clients, snapshot age, orders, risk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import build_warehouse
from trading_api.keys import create_key
from trading_api.main import create_app
from trading_api.routers.metrics import MetricsMiddleware, install_metrics
from trading_pipeline.serving.publish import publish_snapshot
from trading_pipeline.settings import PROJECT_DIR, Settings
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.store import OpsStore


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> Iterator[tuple[Settings, str]]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("TRADING_METRICS_PUBLIC", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home, risk_file=PROJECT_DIR / "risk.yaml", broker="paper")
    build_warehouse(settings.warehouse_path)
    publish_snapshot(settings.warehouse_path, settings.serving_dir)
    store = OpsStore(settings.ops_store_url)
    _record, key = create_key(store, "metrics-tests")
    store.close()
    yield settings, key


@pytest.fixture
def client(env) -> Iterator[TestClient]:
    settings, key = env
    app = create_app(settings, poll_interval=0.05, heartbeat=1.0)
    # create_app installs the metrics middleware and route once; installing again changes nothing
    assert install_metrics(app) is app.state.metrics
    assert sum(m.cls is MetricsMiddleware for m in app.user_middleware) == 1
    with TestClient(app) as c:
        c.headers.update({"X-API-Key": key})
        yield c


def scrape(c: TestClient) -> dict[tuple[str, tuple], float]:
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_counters_and_latency_move(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert client.get("/orders/does-not-exist").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    after = scrape(client)
    key = {"method": "GET", "route": "/health", "status": "200"}
    assert value(after, "trading_api_requests_total", **key) - value(before, "trading_api_requests_total", **key) == 3
    # the route template, not the raw path: bounded label values
    templated = [k for k in after if k[0] == "trading_api_requests_total" and ("status", "404") in k[1]]
    routes = {dict(k[1])["route"] for k in templated}
    assert "<unmatched>" in routes and "/orders/does-not-exist" not in routes
    assert any("{" in r for r in routes), routes
    lat = value(after, "trading_api_request_duration_seconds_count", method="GET", route="/health")
    assert lat - value(before, "trading_api_request_duration_seconds_count", method="GET", route="/health") == 3
    assert value(after, "trading_api_request_duration_seconds_sum", method="GET", route="/health") > 0
    # the earlier scrape itself was counted
    assert value(after, "trading_api_requests_total", method="GET", route="/metrics", status="200") >= 1


def test_snapshot_age_and_sequence(client: TestClient) -> None:
    s = scrape(client)
    assert value(s, "trading_snapshot_up") == 1
    age = s[("trading_snapshot_age_seconds", ())]
    assert 0 <= age < 600
    assert value(s, "trading_snapshot_sequence") >= 1


def test_orders_by_status_and_risk_rejections_reflect_the_ops_store(env, client: TestClient) -> None:
    settings, _ = env
    s = scrape(client)
    assert value(s, "trading_ops_store_up") == 1
    assert {dict(k[1])["status"] for k in s if k[0] == "trading_orders"} == {st.value for st in OrderStatus}
    assert all(v == 0 for k, v in s.items() if k[0] == "trading_orders")

    store = OpsStore(settings.ops_store_url)
    try:
        for i in range(3):
            store.insert_order(Order(f"m{i}", "paper", "GOOG", Side.BUY, Decimal("5")), reason="test")
        store.transition("m0", OrderStatus.ACCEPTED, "ack")
        store.transition("m1", OrderStatus.REJECTED, "broker said no")
        store.record_risk_event(rule="max_notional", reason="notional 1e6 > 1e5", client_order_id="x1")
        store.record_risk_event(rule="max_notional", reason="notional 2e6 > 1e5", client_order_id="x2")
        store.record_risk_event(rule="kill_switch", reason="kill switch on", client_order_id="x3")
    finally:
        store.close()

    s = scrape(client)
    assert value(s, "trading_orders", status="new") == 1
    assert value(s, "trading_orders", status="accepted") == 1
    assert value(s, "trading_orders", status="rejected") == 1
    assert value(s, "trading_orders", status="filled") == 0
    assert value(s, "trading_risk_rejections_total", rule="max_notional") == 2
    assert value(s, "trading_risk_rejections_total", rule="kill_switch") == 1


def test_websocket_clients_come_from_the_hub(env, client: TestClient) -> None:
    _, key = env
    assert value(scrape(client), "trading_api_websocket_clients") == 0
    with client.websocket_connect(f"/ws?api_key={key}") as ws:
        ws.send_text(json.dumps({"action": "subscribe", "channels": ["signals"]}))
        assert ws.receive_json()["type"] == "subscribed"
        assert value(scrape(client), "trading_api_websocket_clients") == 1
    deadline = time.monotonic() + 5
    while value(scrape(client), "trading_api_websocket_clients") != 0:
        assert time.monotonic() < deadline, "hub kept a closed client"
        time.sleep(0.05)


def test_metrics_need_an_api_key_unless_made_public(env, client: TestClient, monkeypatch) -> None:
    r = client.get("/metrics", headers={"X-API-Key": ""})
    assert r.status_code == 401
    _, key = env
    assert client.get("/metrics", headers={"X-API-Key": "", "Authorization": f"Bearer {key}"}).status_code == 200
    monkeypatch.setenv("TRADING_METRICS_PUBLIC", "true")
    assert client.get("/metrics", headers={"X-API-Key": ""}).status_code == 200


def test_ops_store_down_is_reported_not_fatal(env, tmp_path: Path) -> None:
    settings, key = env
    broken = settings.model_copy(update={"ops_url": f"sqlite:///{tmp_path}/missing/dir/ops.sqlite"})
    app = create_app(broken)
    install_metrics(app)
    with TestClient(app) as c:
        # the key cannot be checked without a store; open the endpoint to see the rest of the scrape
        os.environ["TRADING_METRICS_PUBLIC"] = "1"
        try:
            s = scrape(c)
        finally:
            del os.environ["TRADING_METRICS_PUBLIC"]
    assert value(s, "trading_ops_store_up") == 0
    assert value(s, "trading_snapshot_up") == 1


MULTIPROC_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families
    from trading_api.main import create_app
    from trading_api.routers.metrics import install_metrics
    from trading_pipeline.settings import Settings

    settings = Settings(home=sys.argv[1])
    app = create_app(settings)
    install_metrics(app)
    os.environ["TRADING_METRICS_PUBLIC"] = "1"
    with TestClient(app) as c:
        for _ in range(int(sys.argv[2])):
            c.get("/health")
        if sys.argv[3] == "scrape":
            text = c.get("/metrics").text
            out = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
            print(json.dumps(out))
    """
)


def test_multiprocess_mode_aggregates_workers(env, tmp_path: Path) -> None:
    """Two worker processes write to PROMETHEUS_MULTIPROC_DIR; the scrape in the second sums both."""
    settings, _ = env
    mp = tmp_path / "prom"
    mp.mkdir()
    e = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    args = [sys.executable, "-c", MULTIPROC_SCRIPT, str(settings.home)]
    subprocess.run([*args, "2", "no"], env=e, check=True, timeout=120, capture_output=True)
    assert list(mp.glob("counter_*.db")), "worker wrote no samples"
    out = subprocess.run([*args, "3", "scrape"], env=e, check=True, timeout=120, capture_output=True, text=True)
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s['trading_api_requests_total{"method": "GET", "route": "/health", "status": "200"}'] == 5
    assert s['trading_snapshot_up{}'] == 1
    assert s['trading_orders{"status": "new"}'] == 0
    # the first worker shut down cleanly: its live WebSocket gauge was retired
    assert s.get('trading_api_websocket_clients{}', 0) == 0
