"""Outbound notifications against real receivers: a local HTTP server (signature, idempotency key,
payload per kind), a local SMTP server, real paper-broker fills, real risk denials and broker
rejections, real signals from a real scan; a receiver down then up loses and duplicates nothing."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes

import dagster as dg
import pytest

from tests.api.support import free_port
from tests.stubs.webhook_receiver import Receiver
from tests.trading.conftest import T0, Clock, daily_bars
from trading_pipeline.defs.notifications import notifications as notifications_sensor
from trading_pipeline.settings import Settings, get_settings
from trading_pipeline.trading import notifications as notify
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.execution import submit_order, sync_open_orders
from trading_pipeline.trading.model import OrderRequest, Side
from trading_pipeline.trading.risk import RiskEngine, RiskLimits
from trading_pipeline.trading.store import OpsStore

SECRET = "s3cret"
D = Decimal
NOW = datetime(2024, 3, 6, 21, 0)


class SMTPReceiver:
    """Enough SMTP (RFC 5321: EHLO, MAIL, RCPT, DATA, QUIT; no STARTTLS) to receive mail; the DATA
    answers follow ``codes`` (then 250)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.codes: list[int] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 localhost test SMTP")
                sender, rcpts = "", []
                while line := self.rfile.readline():
                    cmd = line.decode().strip()
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-localhost")
                        self.reply("250 8BITMIME")
                    elif verb == "MAIL":
                        sender, rcpts = cmd.split(":", 1)[1].strip(), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        rcpts.append(cmd.split(":", 1)[1].strip())
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        code = outer.codes.pop(0) if outer.codes else 250
                        if code == 250:
                            outer.messages.append((sender, rcpts, data))
                        self.reply(f"{code} {'OK' if code == 250 else 'try again later'}")
                    elif verb == "RSET":
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Iterator[OpsStore]:
    """The ops store on both backends it supports (a throwaway Postgres cluster: tests/pg.py)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    else:
        url = request.getfixturevalue("pg_cluster").url(request.getfixturevalue("pg_database"))
    s = OpsStore(url)
    yield s
    s.close()


def channels(url: str | None = None, smtp: dict | None = None, kinds=notify.EVENT_KINDS, min_score: float = 0.0,
             risk_on_webhook: bool = True) -> notify.Channels:
    return notify.Channels(url, SECRET, frozenset(kinds), min_score, risk_on_webhook, smtp)


def trade(store: OpsStore) -> dict[str, str]:
    """Real paper trading: one buy filled on the next bar, one denied by risk (too large), one
    rejected by the broker (a symbol it has no bars for). Returns their client order ids."""
    feed = PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100)]))
    clock = Clock(T0 + timedelta(hours=22))
    broker = PaperBroker(store, feed, account="acct", starting_cash=D("100000"), clock=clock)
    engine = RiskEngine(RiskLimits(max_order_quantity=D("50"), price_collar_pct=D("50")), store)
    prices = {"AAA": D("100"), "ZZZ": D("100")}
    out = {}
    for name, symbol, qty in (("fill", "AAA", D("10")), ("deny", "AAA", D("500")), ("reject", "ZZZ", D("5"))):
        req = OrderRequest(client_order_id=f"t-{name}", account="acct", symbol=symbol, side=Side.BUY, quantity=qty)
        submit_order(req, broker=broker, store=store, risk_engine=engine, prices=prices)
        out[name] = req.client_order_id
    feed.append(daily_bars("AAA", [(101, 102, 100, 101)], start=T0 + timedelta(days=1)))
    clock.now = T0 + timedelta(days=1, hours=22)
    broker.process_bars()  # the broker fills on the next bar's open
    sync_open_orders(store, broker, "acct")  # and the ops store books the fill
    return out


def test_fills_denials_rejections_and_risk_alerts_are_posted_signed_once(store, receiver) -> None:
    cfg = channels(receiver.url)
    store.record_risk_alert(account="acct", kind="old", level="warning", message="before enabling",
                            session_date=date(2024, 3, 1), ts=NOW)
    assert notify.collect(store, cfg, now=NOW) == {"fill": 0, "rejection": 0, "risk": 0}  # starts at "now"
    ids = trade(store)
    alert = store.record_risk_alert(account="acct", kind="daily_loss", level="warning", message="acct: daily_loss",
                                    session_date=date(2024, 3, 5), value=D("8000"), limit_value=D("10000"), ts=NOW)
    assert notify.collect(store, cfg, now=NOW) == {"fill": 1, "rejection": 2, "risk": 1}
    got = notify.deliver_all(store, cfg, now=NOW)["webhook"]
    assert not got.failed and len(got.delivered) == 4 == len(receiver.requests)
    [fill] = store.list_fills("acct")
    by_kind = {b["kind"]: (h, b) for h, b in ((h, json.loads(raw)) for h, raw in receiver.requests)}
    assert set(by_kind) == {"fill", "order_denied", "order_rejected", "risk_alert"}
    for headers, body in receiver.requests:
        event_id = json.loads(body)["id"]
        assert headers["X-Signature"] == notify.signature(body, SECRET)
        assert headers["Idempotency-Key"] == headers["X-Event-Id"] == event_id
        assert headers["Content-Type"] == "application/json"
    h, b = by_kind["fill"]
    assert b["id"] == f"fill-{fill.fill_id}" and b["ts"] == fill.ts.isoformat()
    assert b["data"] == {"fill_id": fill.fill_id, "client_order_id": ids["fill"], "account": "acct", "symbol": "AAA",
                              "side": "buy", "quantity": "10", "price": str(fill.price), "commission": str(fill.commission),
                              "realized_pnl": str(fill.realized_pnl)}
    assert fill.price == D("101") and "buy 10 AAA @ 101" in b["text"]
    _, b = by_kind["order_denied"]
    assert b["id"].startswith("order-denied-") and b["data"]["client_order_id"] == ids["deny"]
    assert b["data"]["status"] == "denied" and "max_order_quantity" in b["data"]["reason"]
    _, b = by_kind["order_rejected"]
    assert b["id"].startswith("order-rejected-") and b["data"]["client_order_id"] == ids["reject"]
    assert "unknown symbol 'ZZZ'" in b["data"]["reason"] and "rejected by the broker" in b["text"]
    _, b = by_kind["risk_alert"]
    assert b["id"] == f"risk-alert-{alert.id}" and b["data"] == alert.public()
    # dedup at the sender: collecting again (cursors reset too) and delivering again sends nothing
    assert notify.collect(store, cfg, now=NOW) == {"fill": 0, "rejection": 0, "risk": 0}
    for source in ("order_events", "risk_alerts"):
        store.set_cursor(notify.CURSOR + source, "0")
    # re-read from the start: only the alert from before enabling is new to the outbox
    assert notify.collect(store, cfg, now=NOW) == {"fill": 0, "rejection": 0, "risk": 1}
    again = notify.deliver_all(store, cfg, now=NOW + timedelta(days=1))["webhook"]
    assert len(again.delivered) == 1 and again.delivered[0] not in {b["id"] for b in receiver.bodies()[:4]}
    ids = [b["id"] for b in receiver.bodies()]
    assert len(ids) == 5 == len(set(ids))  # nothing sent twice
    assert notify.deliver_all(store, cfg, now=NOW + timedelta(days=2))["webhook"].delivered == []
    assert all(n.delivered_at is not None and n.attempts == 1 for n in notify.listed(store))


def test_kinds_filter_and_risk_alerts_left_to_the_alert_webhook(store, receiver) -> None:
    cfg = channels(receiver.url, kinds=("fill", "risk"), risk_on_webhook=False)  # notify URL == alert URL
    notify.collect(store, cfg)
    trade(store)
    store.record_risk_alert(account="acct", kind="drawdown", level="warning", message="m", session_date=date(2024, 3, 5))
    assert notify.collect(store, cfg) == {"fill": 1, "rejection": 0, "risk": 0}
    assert [n.kind for n in notify.listed(store)] == ["fill"]


def test_receiver_down_then_up_loses_nothing_and_duplicates_nothing(store) -> None:
    port = free_port()
    cfg = channels(f"http://127.0.0.1:{port}/hook")
    notify.collect(store, cfg, now=NOW)
    trade(store)
    notify.collect(store, cfg, now=NOW)
    got = notify.deliver_all(store, cfg, now=NOW, timeout=2)["webhook"]  # connection refused: raises nothing
    assert got.stopped == "receiver unreachable" and len(got.failed) == 1 and got.delivered == []
    [first] = [n for n in notify.listed(store) if n.attempts]
    assert "refused" in first.last_error.lower() and first.delivered_at is None
    # more events while it is down
    store.record_risk_alert(account="acct", kind="var", level="warning", message="m", session_date=date(2024, 3, 5), ts=NOW)
    notify.collect(store, cfg, now=NOW)
    assert len(notify.listed(store)) == 4
    up = Receiver(port)
    try:
        early = notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=59))["webhook"]
        assert early.waiting == 1 and len(early.delivered) == 3  # the failed one waits out its backoff
        late = notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=60))["webhook"]
        assert late.delivered == [first.event_id]
        assert notify.deliver_all(store, cfg, now=NOW + timedelta(hours=1))["webhook"].delivered == []
        keys = [h["Idempotency-Key"] for h, _ in up.requests]
        assert sorted(keys) == sorted(n.event_id for n in notify.listed(store)) and len(set(keys)) == 4
    finally:
        up.close()


def test_a_500_is_retried_with_backoff_then_given_up(store, receiver) -> None:
    cfg = channels(receiver.url)
    notify.collect(store, cfg, now=NOW)
    store.record_risk_alert(account="acct", kind="var", level="warning", message="m", session_date=date(2024, 3, 5), ts=NOW)
    notify.collect(store, cfg, now=NOW)
    receiver.statuses = [500, 503]
    got = notify.deliver_all(store, cfg, now=NOW)["webhook"]
    [n] = notify.listed(store)
    assert got.failed == {n.event_id: "HTTP 500: boom"} and got.stopped is None  # it answered: not "unreachable"
    assert notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=59))["webhook"].waiting == 1  # 2^1 x 30 s
    assert notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=60))["webhook"].failed  # the 503
    assert notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=60 + 119))["webhook"].waiting == 1  # 2^2 x 30 s
    assert notify.deliver_all(store, cfg, now=NOW + timedelta(seconds=180))["webhook"].delivered == [n.event_id]
    assert len({b for _, b in receiver.requests}) == 1 and len(receiver.requests) == 3  # the same body each time
    # a receiver that never accepts: given up after max_attempts, error kept, no longer retried
    store.record_risk_alert(account="acct", kind="drawdown", level="warning", message="m", session_date=date(2024, 3, 5))
    notify.collect(store, cfg)
    receiver.statuses = [500] * 10
    for hours in range(1, 6):
        notify.deliver_all(store, cfg, now=NOW + timedelta(days=1, hours=3 * hours), max_attempts=3)
    stuck = [x for x in notify.listed(store) if x.delivered_at is None]
    assert [(x.attempts, x.last_error) for x in stuck] == [(3, "HTTP 500: boom")]
    assert notify.pending(store, "webhook", max_attempts=3) == []


def test_email_over_smtp_same_events_same_dedup(store) -> None:
    smtp = SMTPReceiver()
    try:
        cfg = channels(smtp={"host": "127.0.0.1", "port": smtp.port, "user": "", "password": "", "starttls": False,
                             "sender": "bot@example.com", "to": ["desk@example.com", "risk@example.com"]})
        assert cfg.names() == ["email"]
        notify.collect(store, cfg, now=NOW)
        ids = trade(store)
        notify.collect(store, cfg, now=NOW)
        smtp.codes = [451]  # the server answers "try again later" to the first mail
        first = notify.deliver_all(store, cfg, now=NOW)["email"]
        assert len(first.failed) == 1 and next(iter(first.failed.values())).startswith("SMTP 451")
        assert len(first.delivered) == 2 and len(smtp.messages) == 2  # an answer, not unreachable: the pass went on
        assert notify.deliver_all(store, cfg, now=NOW + timedelta(minutes=1))["email"].delivered == list(first.failed)
        assert notify.deliver_all(store, cfg, now=NOW + timedelta(hours=1))["email"].delivered == []
        assert len(smtp.messages) == 3
        mails = {m["Idempotency-Key"]: (s, r, m) for s, r, m in ((s, r, message_from_bytes(d)) for s, r, d in smtp.messages)}
        assert set(mails) == {n.event_id for n in notify.listed(store, "email")}
        fill_id = next(k for k in mails if k.startswith("fill-"))
        sender, rcpts, msg = mails[fill_id]
        assert sender == "<bot@example.com>" and rcpts == ["<desk@example.com>", "<risk@example.com>"]
        assert msg["Message-ID"] == notify.message_id(fill_id) and msg["Subject"].startswith("[trading] acct: buy 10 AAA")
        assert ids["fill"] in msg.get_payload()
        # STARTTLS required but not offered: a clear error kept, the mail waits (nothing lost)
        store.record_risk_alert(account="acct", kind="var", level="warning", message="m", session_date=date(2024, 3, 5))
        notify.collect(store, cfg)
        tls = notify.Channels(None, None, cfg.kinds, 0.0, True, cfg.smtp | {"starttls": True})
        got = notify.deliver_all(store, tls, now=NOW + timedelta(hours=2))["email"]
        assert got.stopped == "receiver unreachable" and "STARTTLS" in next(iter(got.failed.values()))
        assert len(smtp.messages) == 3
        assert notify.deliver_all(store, cfg, now=NOW + timedelta(hours=3))["email"].delivered == list(got.failed)
    finally:
        smtp.close()


def test_bad_settings_are_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match="notify_events"):
        Settings(notify_events="signals,fills")
    with pytest.raises(ValueError, match="notify_webhook_url"):
        Settings(notify_webhook_url="hooks.example.com/x")
    s = Settings(notify_events="fill, risk", alert_webhook_url="http://127.0.0.1:9/a")
    cfg = notify.Channels.from_settings(s)
    assert cfg.kinds == {"fill", "risk"} and cfg.webhook_url == "http://127.0.0.1:9/a" and not cfg.risk_on_webhook
    assert cfg.for_kind("risk") == [] and cfg.for_kind("fill") == ["webhook"] and cfg.for_kind("signal") == []
    s = Settings(notify_webhook_url="http://127.0.0.1:9/n", alert_webhook_url="http://127.0.0.1:9/a",
                 smtp_host="127.0.0.1", notify_email_to="a@example.com, b@example.com")
    cfg = notify.Channels.from_settings(s)
    assert cfg.names() == ["webhook", "email"] and cfg.for_kind("risk") == ["webhook", "email"]
    assert cfg.smtp["to"] == ["a@example.com", "b@example.com"] and cfg.smtp["starttls"] is True
    assert notify.Channels.from_settings(Settings(smtp_host="127.0.0.1")).names() == []  # no recipients: no email


# ---- real signals, through the sensor --------------------------------------------------------
MIN_SCORE = 80


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A real scan of the sample data (TRADING_HOME of its own)."""
    from tests.scans.runs import scan_daily

    mp = pytest.MonkeyPatch()
    mp.setenv("TRADING_HOME", str(tmp_path_factory.mktemp("notify") / "trading"))
    for var in ("TRADING_OPS_URL", "TRADING_WAREHOUSE", "TRADING_ALERT_WEBHOOK_URL", "TRADING_NOTIFY_WEBHOOK_URL"):
        mp.delenv(var, raising=False)
    get_settings.cache_clear()
    scan_daily({"source": "sample", "synthetic_symbols": 20}, date(2012, 11, 1), date(2013, 2, 21))
    yield mp
    mp.undo()
    get_settings.cache_clear()


def warehouse_signals(session: str) -> list[tuple]:
    from trading_pipeline.marketdata import warehouse

    con = warehouse.connect(get_settings().warehouse_path, read_only=True)
    try:
        return con.execute("SELECT scan, symbol, ts, kind, score FROM marts.signals WHERE session_date = ?", [session]).fetchall()
    finally:
        con.close()


def test_the_sensor_posts_new_signals_above_the_min_score_once(scanned, receiver) -> None:
    from tests.scans.runs import scan_daily

    result = notifications_sensor(dg.build_sensor_context())
    assert isinstance(result, dg.SkipReason) and "nothing is notified" in result.skip_message
    scanned.setenv("TRADING_NOTIFY_WEBHOOK_URL", receiver.url)
    scanned.setenv("TRADING_ALERT_WEBHOOK_SECRET", SECRET)
    scanned.setenv("TRADING_NOTIFY_MIN_SCORE", str(MIN_SCORE))
    get_settings.cache_clear()
    try:
        # first tick: the newest session's signals (not the history), those scoring >= MIN_SCORE only
        rows = warehouse_signals("2013-02-21")
        want = {notify.signal_id(s, sym, ts, k) for s, sym, ts, k, score in rows if score >= MIN_SCORE}
        assert want and any(score < MIN_SCORE for *_, score in rows)  # the threshold has something to drop
        result = notifications_sensor(dg.build_sensor_context())
        assert f"delivered {len(want)}" in result.skip_message, result.skip_message
        bodies = receiver.bodies()
        assert {b["id"] for b in bodies} == want and all(b["kind"] == "signal" for b in bodies)
        assert all(b["data"]["score"] >= MIN_SCORE and b["data"]["session_date"] == "2013-02-21" for b in bodies)
        for headers, body in receiver.requests:
            assert headers["X-Signature"] == notify.signature(body, SECRET)
            assert headers["Idempotency-Key"] == json.loads(body)["id"]
        # nothing new: nothing sent
        assert "delivered 0" in notifications_sensor(dg.build_sensor_context()).skip_message
        # the next session scanned: only its signals are new
        scan_daily({"source": "sample", "synthetic_symbols": 20}, date(2013, 2, 22), date(2013, 2, 22))
        new = {notify.signal_id(s, sym, ts, k) for s, sym, ts, k, score in warehouse_signals("2013-02-22") if score >= MIN_SCORE}
        assert new
        notifications_sensor(dg.build_sensor_context())
        ids = [b["id"] for b in receiver.bodies()]
        assert set(ids) == want | new and len(ids) == len(set(ids))
    finally:
        get_settings.cache_clear()
