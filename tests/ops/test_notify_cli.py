"""`trading notify list|retry|send-test` as an operator runs them: the real console script in a
subprocess on a temp TRADING_HOME, a real ops store, a real webhook receiver, and the real
notifications sensor delivering what the commands queued or made due again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from tests.stubs.webhook_receiver import Receiver
from trading_pipeline.defs.notifications import notifications as notifications_sensor
from trading_pipeline.settings import Settings, get_settings
from trading_pipeline.trading import notifications as notify
from trading_pipeline.trading.store import OpsStore

TRADING = str(Path(sys.executable).parent / "trading")  # the console script, a real binary
SECRET = "s3cret"
NOW = datetime(2024, 3, 6, 21, 0)


@dataclass
class Desk:
    """A TRADING_HOME whose outbox holds one row of each status, and the receiver it posts to."""

    home: Path
    env: dict[str, str]
    receiver: Receiver
    store: OpsStore
    ids: dict[str, str]  # delivered, failed, pending (webhook), failed_email

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([TRADING, "notify", *args], env=env or self.env, cwd=self.home,
                              capture_output=True, text=True, timeout=120)

    def json(self, *args: str) -> object:
        r = self.run(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def rows(self) -> list[notify.Notification]:
        return notify.listed(self.store)

    def tick(self) -> str:
        """One evaluation of the real sensor (it reads the same settings as the subprocesses)."""
        return notifications_sensor(dg.build_sensor_context()).skip_message


def _event(name: str, at: datetime) -> dict:
    return notify.event(f"fill-{name}", "fill", at, f"acct: buy 1 GOOG @ 100 filled ({name})", {"fill_id": name})


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    receiver = Receiver()
    home = tmp_path / "trading"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env.update(TRADING_HOME=str(home), TRADING_NOTIFY_WEBHOOK_URL=receiver.url, TRADING_ALERT_WEBHOOK_SECRET=SECRET)
    for k in [k for k in os.environ if k.startswith("TRADING_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("TRADING_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = Settings()
    settings.ensure_dirs()
    store = OpsStore(settings.ops_store_url)
    cfg = notify.Channels.from_settings(settings)
    assert cfg.names() == ["webhook"]
    # delivered: taken at the first try
    notify.enqueue(store, [_event("a", NOW)], ["webhook"], NOW)
    assert notify.deliver_all(store, cfg, now=NOW)["webhook"].delivered == ["fill-a"]
    # failed: a receiver answering 500 for every one of MAX_ATTEMPTS attempts, a day apart
    notify.enqueue(store, [_event("b", NOW)], ["webhook"], NOW + timedelta(minutes=1))
    receiver.statuses = [500] * notify.MAX_ATTEMPTS
    for day in range(notify.MAX_ATTEMPTS):
        notify.deliver_all(store, cfg, now=NOW + timedelta(days=day))
    # pending: one failed attempt, waiting out its backoff
    notify.enqueue(store, [_event("c", NOW)], ["webhook"], NOW + timedelta(days=20))
    receiver.statuses = [503]
    notify.deliver_all(store, cfg, now=NOW + timedelta(days=20))
    # an email row given up (no SMTP server here: its attempts recorded the way a pass records them)
    notify.enqueue(store, [_event("d", NOW)], ["email"], NOW + timedelta(days=21))
    [d] = notify.listed(store, "email")
    for i in range(notify.MAX_ATTEMPTS):
        notify.mark(store, d, NOW + timedelta(days=21, hours=i), "ConnectionRefusedError: [Errno 111] Connection refused")
    assert len(receiver.requests) == 1 + notify.MAX_ATTEMPTS + 1
    try:
        yield Desk(home, env, receiver, store, {"delivered": "fill-a", "failed": "fill-b", "pending": "fill-c",
                                                     "failed_email": "fill-d"})
    finally:
        store.close()
        receiver.close()
        get_settings.cache_clear()


def test_list_shows_each_row_with_its_status_and_filters(desk: Desk) -> None:
    rows = desk.json("list")
    assert [(r["event_id"], r["channel"], r["status"]) for r in rows] == [
        ("fill-d", "email", "failed"), ("fill-c", "webhook", "pending"),
        ("fill-b", "webhook", "failed"), ("fill-a", "webhook", "delivered")]  # newest first
    by_id = {r["event_id"]: r for r in rows}
    assert by_id["fill-b"]["attempts"] == notify.MAX_ATTEMPTS and by_id["fill-b"]["last_error"] == "HTTP 500: boom"
    assert by_id["fill-a"]["delivered_at"] == NOW.isoformat() and by_id["fill-a"]["last_error"] is None
    assert by_id["fill-c"]["next_attempt_at"] == (NOW + timedelta(days=20, seconds=60)).isoformat()  # 2^1 x 30 s
    assert by_id["fill-c"]["text"].endswith("filled (c)") and by_id["fill-c"]["event"]["data"] == {"fill_id": "c"}

    assert [r["event_id"] for r in desk.json("list", "--status", "failed")] == ["fill-d", "fill-b"]
    assert [r["event_id"] for r in desk.json("list", "--status", "failed", "--channel", "webhook")] == ["fill-b"]
    assert [r["event_id"] for r in desk.json("list", "--status", "delivered")] == ["fill-a"]
    assert [r["event_id"] for r in desk.json("list", "--status", "pending")] == ["fill-c"]
    assert [r["event_id"] for r in desk.json("list", "--limit", "2")] == ["fill-d", "fill-c"]

    table = desk.run("list", "--status", "failed")
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "fill-b" in ln)
    assert "failed" in line and "HTTP 500: boom" in line and "webhook" in line
    assert "no delivered email notifications" in desk.run("list", "--status", "delivered", "--channel", "email").stdout


def test_bad_input_exits_2_with_a_message_and_changes_nothing(desk: Desk) -> None:
    before = desk.rows()
    for args, message in [
        (("list", "--status", "bogus"), "'bogus' is not one of 'pending', 'delivered', 'failed'"),
        (("list", "--channel", "sms"), "'sms' is not one of 'webhook', 'email'"),
        (("list", "--limit", "0"), "--limit"),
        (("retry", "fill-nope"), "no notification 'fill-nope'"),
        (("retry", "fill-b", "--channel", "email"), "no notification 'fill-b' on channel email"),
        (("retry", "fill-a"), "has not been given up (webhook delivered)"),
        (("retry", "fill-c"), "has not been given up (webhook pending)"),
        (("retry",), "give either an EVENT_ID or --failed"),
        (("retry", "fill-b", "--failed"), "not both"),
        (("send-test", "--channel", "email"), "channel 'email' is not configured (configured: webhook)"),
    ]:
        r = desk.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in " ".join(r.stderr.replace("│", " ").split()), (args, r.stderr)  # unfold Rich's error box
    assert desk.rows() == before


def test_retry_makes_one_given_up_row_due_and_the_sensor_sends_it_once(desk: Desk) -> None:
    before = {(n.event_id, n.channel): n for n in desk.rows()}
    out = desk.json("retry", "fill-b")
    assert out == {"retried": [{"event_id": "fill-b", "channel": "webhook", "last_error": "HTTP 500: boom"}]}
    after = {(n.event_id, n.channel): n for n in desk.rows()}
    b = after.pop(("fill-b", "webhook"))
    assert (b.attempts, b.last_attempt_at, b.delivered_at) == (0, None, None)
    assert b.payload == before[("fill-b", "webhook")].payload and b.created_at == before[("fill-b", "webhook")].created_at
    assert after == {k: v for k, v in before.items() if k != ("fill-b", "webhook")}  # nothing else changed
    assert [r["event_id"] for r in desk.json("list", "--status", "failed")] == ["fill-d"]

    sent_before = len(desk.receiver.requests)
    summary = desk.tick()
    assert "webhook: delivered 2" in summary, summary  # fill-b, and fill-c whose backoff ended long ago
    new = desk.receiver.requests[sent_before:]
    assert sorted(json.loads(body)["id"] for _, body in new) == ["fill-b", "fill-c"]
    headers, body = next((h, b) for h, b in new if json.loads(b)["id"] == "fill-b")
    assert headers["Idempotency-Key"] == "fill-b" and headers["X-Signature"] == notify.signature(body, SECRET)
    assert {r["event_id"]: r["status"] for r in desk.json("list")}["fill-b"] == "delivered"
    assert "delivered 0" in desk.tick()  # delivered once, never again

    # --failed: every given-up row (of a channel); then nothing left to retry
    assert desk.json("retry", "--failed", "--channel", "email")["retried"][0]["event_id"] == "fill-d"
    assert desk.json("list", "--status", "failed") == []
    r = desk.run("retry", "--failed")
    assert r.returncode == 0 and "nothing to retry" in r.stdout


def test_send_test_goes_through_the_outbox_to_the_receiver(desk: Desk) -> None:
    out = desk.json("send-test")
    event_id = out["event_id"]
    assert out["channels"] == ["webhook"] and event_id.startswith("test-") and out["event"]["kind"] == "test"
    [row] = [r for r in desk.json("list") if r["event_id"] == event_id]
    assert row["status"] == "pending" and row["kind"] == "test" and row["attempts"] == 0
    sent_before = len(desk.receiver.requests)
    desk.tick()
    got = [(h, json.loads(b)) for h, b in desk.receiver.requests[sent_before:] if json.loads(b)["id"] == event_id]
    assert len(got) == 1
    headers, body = got[0]
    assert body["kind"] == "test" and "receiver gets trading notifications" in body["text"]
    assert body["data"]["requested_by"].startswith("cli:") and headers["Idempotency-Key"] == event_id
    assert {r["event_id"]: r["status"] for r in desk.json("list")}[event_id] == "delivered"
    second = desk.json("send-test")["event_id"]
    assert second != event_id  # each request is a new event, not deduplicated away

    # no channel configured: says what to set, queues nothing
    bare = {k: v for k, v in desk.env.items() if k != "TRADING_NOTIFY_WEBHOOK_URL"}
    before = desk.rows()
    r = desk.run("send-test", env=bare)
    assert r.returncode == 2 and "TRADING_NOTIFY_WEBHOOK_URL" in r.stderr and ".env.example" in r.stderr
    assert desk.rows() == before
