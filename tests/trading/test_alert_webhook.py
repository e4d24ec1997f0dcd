"""The risk alert webhook against a real local HTTP receiver: delivered once and signed, retried
with backoff after a 500, a dead receiver recorded (and nothing raised), never sent twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest

from tests.stubs.webhook_receiver import Receiver
from trading_pipeline.defs.alerts_webhook import alerts_webhook, deliver_pending, due, signature
from trading_pipeline.settings import get_settings

SECRET = "s3cret"
T = datetime(2024, 3, 5, 21, 0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/hook"


def alert(store, kind: str = "daily_loss", level: str = "warning"):
    return store.record_risk_alert(account="acct", kind=kind, level=level, message=f"acct: {kind}",
                                   session_date=date(2024, 3, 5), value=Decimal("8000"),
                                   limit_value=Decimal("10000"), ts=T)


def test_delivered_once_signed_with_an_idempotency_key(store, receiver) -> None:
    a = alert(store)
    got = deliver_pending(store, receiver.url, SECRET, now=T)
    assert got.delivered == [a.id] and not got.failed
    [(headers, body)] = receiver.requests
    assert headers["X-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == signature(body, SECRET)
    assert headers["Idempotency-Key"] == f"risk-alert-{a.id}" and headers["X-Event-Id"] == str(a.id)
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "id": a.id, "source": "risk", "account": "acct", "kind": "daily_loss", "level": "warning", "value": "8000",
        "limit": "10000", "message": "acct: daily_loss", "session_date": "2024-03-05", "ts": "2024-03-05T21:00:00",
    }
    [stored] = store.list_risk_alerts()
    assert stored.delivered_at == T and stored.attempts == 1 and stored.last_error is None
    # delivered: never sent again
    assert deliver_pending(store, receiver.url, SECRET, now=T + timedelta(days=1)).delivered == []
    assert len(receiver.requests) == 1
    # without a secret there is no signature header
    alert(store, kind="drawdown")
    deliver_pending(store, receiver.url, None, now=T)
    assert "X-Signature" not in receiver.requests[-1][0]


def test_a_500_is_retried_after_the_backoff(store, receiver) -> None:
    a = alert(store)
    receiver.statuses = [500]
    got = deliver_pending(store, receiver.url, SECRET, now=T)
    assert got.failed == {a.id: "HTTP 500: boom"} and got.delivered == []
    [stored] = store.list_risk_alerts()
    assert (stored.attempts, stored.last_error, stored.delivered_at) == (1, "HTTP 500: boom", None)
    # the next attempt waits 2^1 x 30 s = 60 s after the last one
    assert not due(stored, T + timedelta(seconds=59)) and due(stored, T + timedelta(seconds=60))
    assert deliver_pending(store, receiver.url, SECRET, now=T + timedelta(seconds=59)).waiting == 1
    assert len(receiver.requests) == 1
    got = deliver_pending(store, receiver.url, SECRET, now=T + timedelta(seconds=60))
    assert got.delivered == [a.id] and len(receiver.requests) == 2
    assert receiver.requests[0][1] == receiver.requests[1][1]  # the same body and key, for the receiver to dedupe
    assert receiver.requests[0][0]["Idempotency-Key"] == receiver.requests[1][0]["Idempotency-Key"]
    [stored] = store.list_risk_alerts()
    assert stored.attempts == 2 and stored.delivered_at == T + timedelta(seconds=60) and stored.last_error is None


def test_a_dead_receiver_is_recorded_and_given_up_after_max_attempts(store) -> None:
    url = dead_url()
    a, b = alert(store), alert(store, kind="drawdown")
    got = deliver_pending(store, url, SECRET, now=T, timeout=2)  # returns; raises nothing
    assert list(got.failed) == [a.id] and got.stopped == "receiver unreachable"  # b waits for the next tick
    stored = {x.id: x for x in store.list_risk_alerts()}
    assert stored[a.id].attempts == 1 and "refused" in stored[a.id].last_error.lower()
    assert stored[b.id].attempts == 0
    at = T
    for _ in range(5):
        at += timedelta(hours=3)  # past any backoff
        deliver_pending(store, url, SECRET, now=at, max_attempts=3, timeout=2)
    stored = {x.id: x for x in store.list_risk_alerts()}
    assert stored[a.id].attempts == 3 and stored[b.id].attempts == 3  # given up, errors kept
    assert stored[a.id].delivered_at is None and stored[a.id].last_error
    assert store.undelivered_risk_alerts(max_attempts=3) == []


def test_the_sensor_is_a_no_op_without_a_url_and_posts_with_one(tmp_path, monkeypatch, receiver) -> None:
    monkeypatch.setenv("TRADING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRADING_OPS_URL", raising=False)
    monkeypatch.delenv("TRADING_ALERT_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = alerts_webhook(dg.build_sensor_context())
        assert isinstance(result, dg.SkipReason) and "no TRADING_ALERT_WEBHOOK_URL" in result.skip_message
        from trading_pipeline.trading.store import OpsStore

        store = OpsStore.from_settings(get_settings())
        alert(store)
        monkeypatch.setenv("TRADING_ALERT_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("TRADING_ALERT_WEBHOOK_SECRET", SECRET)
        get_settings.cache_clear()
        result = alerts_webhook(dg.build_sensor_context())
        assert "delivered 1" in result.skip_message and len(receiver.requests) == 1
        headers, body = receiver.requests[0]
        assert headers["X-Signature"] == signature(body, SECRET)
        assert "delivered 0" in alerts_webhook(dg.build_sensor_context()).skip_message
        store.close()
    finally:
        get_settings.cache_clear()
