"""Outbound notifications: signals, fills, order rejections/denials and risk alerts, to a webhook
and (optionally) by email, delivered at least once and never twice after a receiver accepted them.

Why an outbox table (ops store ``notifications``, revision 0010) rather than per-source cursors
that advance only after delivery: the sources differ (the warehouse's ``marts.signals``, the ops
store's ``order_events``/``fills`` and ``risk_alerts``), a signal has no id of its own, and there
are two channels that fail independently. With cursors, one dead email server would hold back the
webhook and every source; with an outbox, :func:`collect` turns each new source row into one row
per channel keyed by a stable event id (``signal-<scan>-<symbol>-<ts>-<kind>``, ``fill-<fill id>``,
``order-rejected-<event id>``, ``order-denied-<event id>``, ``risk-alert-<id>``), inserted only if
missing, so a re-read source never enqueues twice; each row then carries its own attempts, backoff
and error, and ``delivered_at`` once a receiver took it (never sent again). The source cursors
(in ``alert_cursors``) only save re-reading: they advance after the enqueue committed.

Sources, read from where :func:`collect` last stopped (the first pass starts at "now": the newest
order event and risk alert, and the newest signal session, so enabling notifications does not
replay history):

* ``signal``: ``marts.signals`` rows with ``score >= TRADING_NOTIFY_MIN_SCORE`` of the cursor's
  session and later (the newest session is re-read each pass: an intraday scan adds to it);
* ``fill`` and ``rejection``: the ``order_events`` log by id (every booked fill writes an event in
  the same transaction; ``rejected`` is the broker's refusal, ``denied`` our pre-trade risk's);
* ``risk``: ``risk_alerts`` by id. The ``alerts_webhook`` sensor already posts them to
  TRADING_ALERT_WEBHOOK_URL from their own outbox, so they are enqueued for the webhook channel only
  when TRADING_NOTIFY_WEBHOOK_URL names a different receiver (and always for email).

Channels: ``webhook`` posts the event (``{"id", "kind", "ts", "text", "data"}``) with the same
headers and retry rules as the risk alert webhook (``Idempotency-Key`` and ``X-Event-Id`` = the
event id, ``X-Signature`` keyed by TRADING_ALERT_WEBHOOK_SECRET); TRADING_NOTIFY_WEBHOOK_URL
defaults to TRADING_ALERT_WEBHOOK_URL, so the one receiver an operator already set up gets every
event. ``email`` sends one plain-text mail per event over SMTP (STARTTLS with
TRADING_SMTP_STARTTLS, login with TRADING_SMTP_USER), its ``Idempotency-Key`` header the event id
and its ``Message-ID`` derived from it (a mail client shows a resend as the same message).

The delivery pass (:func:`deliver`) is shared with the risk alert webhook: oldest first, retried no
sooner than ``2^attempts x 30`` s after the last attempt, given up after :data:`MAX_ATTEMPTS`
(the row stays with its error), a receiver that cannot be reached ends the pass, and a pass stops
after :data:`TICK_BUDGET` seconds. Nothing here raises into the caller: a sensor runs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from trading_pipeline import logs
from trading_pipeline.marketdata.bars import utcnow
from trading_pipeline.trading.store.schema import (
    fills,
    notifications,
    order_events,
    orders,
)

if TYPE_CHECKING:
    from trading_pipeline.settings import Settings
    from trading_pipeline.trading.store import OpsStore

log = logs.get_logger(__name__)

TIMEOUT = 5.0  # seconds per request
MAX_ATTEMPTS = 8  # then the event is given up (last_error kept)
BASE_DELAY = 30.0  # seconds: the next attempt comes 2^attempts x this after the last one
TICK_BUDGET = 40.0  # seconds of delivering per sensor tick
BATCH = 100  # events considered per pass
EVENT_KINDS = ("signal", "fill", "rejection", "risk")
CHANNELS = ("webhook", "email")
CURSOR = "notifications:"  # + source, in alert_cursors


# ---- delivery, shared with the risk alert webhook ------------------------------------------------
def signature(body: bytes, secret: str) -> str:
    """The ``X-Signature`` header's value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an error: it would drop the body
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, data: dict, event_id: str, idempotency_key: str, secret: str | None = None,
              timeout: float = TIMEOUT, agent: str = "trading-pipeline-notifications") -> str | None:
    """POST ``data`` as compact JSON; None when the receiver answered 2xx, else the error as a
    sentence (``HTTP <status>...`` when it answered). Never raises."""
    body = json.dumps(data, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": agent,
               "Idempotency-Key": idempotency_key, "X-Event-Id": event_id}
    if secret:
        headers["X-Signature"] = signature(body, secret)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:  # a status outside 2xx
        detail = exc.read(200).decode("utf-8", "replace") if exc.fp else ""
        return f"HTTP {exc.code}" + (f": {detail}" if detail else "")
    except Exception as exc:  # refused, timeout, DNS, TLS...
        reason = getattr(exc, "reason", None) or exc
        return f"{type(exc).__name__}: {reason}"
    return None if 200 <= status < 300 else f"HTTP {status}"


class Attempted(Protocol):
    attempts: int
    last_attempt_at: datetime | None


def due(item: Attempted, now: datetime, base_delay: float = BASE_DELAY) -> bool:
    """Whether the backoff allows another attempt at ``now``."""
    if item.last_attempt_at is None or item.attempts == 0:
        return True
    return now >= item.last_attempt_at + timedelta(seconds=base_delay * 2**item.attempts)


def answered(error: str) -> bool:
    """Whether the receiver answered (a status: retry this item later) rather than being unreachable
    (the rest of the pass would fail alike)."""
    return error.startswith(("HTTP ", "SMTP "))


@dataclass
class Delivery:
    """What one pass did (item ids)."""

    delivered: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    waiting: int = 0  # not due yet (backoff)
    stopped: str | None = None  # why the pass ended early

    def summary(self) -> str:
        out = f"delivered {len(self.delivered)}, failed {len(self.failed)}, waiting {self.waiting}"
        return out + (f" ({self.stopped})" if self.stopped else "")


def deliver(
    pending: Callable[[], Iterable[Any]], send: Callable[[Any], str | None],
    mark: Callable[[Any, datetime, str | None], None], *, key: Callable[[Any], Any],
    now: datetime | None = None, base_delay: float = BASE_DELAY, budget: float = TICK_BUDGET,
    what: str = "notification",
) -> Delivery:
    """Send every due item of ``pending()`` once, oldest first, recording each attempt with
    ``mark`` (see the module docstring). Never raises: a store error ends the pass."""
    out = Delivery()
    start = time.monotonic()
    try:
        for item in pending():
            if not due(item, now or utcnow(), base_delay):
                out.waiting += 1
                continue
            if time.monotonic() - start > budget:
                out.stopped = f"tick budget of {budget:g} s used"
                break
            error = send(item)
            mark(item, now or utcnow(), error)
            if error is None:
                out.delivered.append(key(item))
                continue
            out.failed[key(item)] = error
            log.warning(f"{what}_failed", id=key(item), attempt=item.attempts + 1, error=error)
            if not answered(error):
                out.stopped = "receiver unreachable"
                break
    except Exception as exc:  # the ops store: try again next tick
        out.stopped = f"{type(exc).__name__}: {exc}"
        log.error(f"{what}_pass_failed", error=exc)
    return out


# ---- the outbox ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Notification:
    """One event for one channel, as stored in the outbox."""

    event_id: str
    channel: str
    kind: str
    payload: str  # the JSON body
    created_at: datetime
    delivered_at: datetime | None = None
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_error: str | None = None

    @property
    def data(self) -> dict:
        return json.loads(self.payload)


def event(event_id: str, kind: str, ts: datetime | date | None, text: str, data: dict) -> dict:
    """The body every channel sends: the id, the kind, when it happened, one sentence, the details."""
    return {"id": event_id, "kind": kind, "ts": ts.isoformat() if ts is not None else None, "text": text, "data": data}


def enqueue(store: OpsStore, events: Iterable[dict], channels: Iterable[str], now: datetime | None = None) -> int:
    """Add each event for each channel unless it is there already; how many rows were added."""
    at, added = now or utcnow(), 0
    rows = [(e, c) for e in events for c in channels]
    if not rows:
        return 0
    dialect = sqlite if store.is_sqlite else postgresql
    with store.transaction() as conn:
        for e, channel in rows:
            stmt = dialect.insert(notifications).values(
                event_id=e["id"], channel=channel, kind=e["kind"], created_at=at, attempts=0,
                payload=json.dumps(e, separators=(",", ":"), default=str),
            )
            # RETURNING, not rowcount: psycopg may count a skipped row on Postgres
            stmt = stmt.on_conflict_do_nothing(index_elements=["event_id", "channel"]).returning(notifications.c.event_id)
            added += conn.execute(stmt).first() is not None
    return added


def pending(store: OpsStore, channel: str, *, max_attempts: int = MAX_ATTEMPTS, limit: int = BATCH) -> list[Notification]:
    """Undelivered rows of ``channel`` with fewer than ``max_attempts`` attempts, oldest first."""
    n = notifications.c
    q = (sa.select(notifications).where(n.channel == channel, n.delivered_at.is_(None), n.attempts < max_attempts)
         .order_by(n.created_at, n.event_id).limit(limit))
    with store.reading() as conn:
        return [Notification(**dict(r._mapping)) for r in conn.execute(q)]


def listed(store: OpsStore, channel: str | None = None) -> list[Notification]:
    """Every row (of ``channel``), oldest first: for the CLI and tests."""
    q = sa.select(notifications).order_by(notifications.c.created_at, notifications.c.event_id)
    if channel:
        q = q.where(notifications.c.channel == channel)
    with store.reading() as conn:
        return [Notification(**dict(r._mapping)) for r in conn.execute(q)]


def mark(store: OpsStore, item: Notification, ts: datetime, error: str | None) -> None:
    """One delivery attempt at ``ts``: delivered when ``error`` is None, else the error kept."""
    n = notifications.c
    values: dict = {"attempts": n.attempts + 1, "last_attempt_at": ts, "last_error": error}
    if error is None:
        values["delivered_at"] = ts
    with store.transaction() as conn:
        conn.execute(notifications.update().where(n.event_id == item.event_id, n.channel == item.channel).values(**values))


# ---- sources -----------------------------------------------------------------------------
def _cursor(store: OpsStore, source: str) -> str | None:
    return store.get_cursor(CURSOR + source)


def order_event_notifications(store: OpsStore, after_id: int, kinds: set[str], limit: int = 1000) -> tuple[list[dict], int]:
    """Fill and rejection/denial events from the ``order_events`` log after ``after_id``, and the
    last id read."""
    ev = order_events
    q = (sa.select(ev, orders.c.account, orders.c.symbol, orders.c.side, orders.c.quantity, orders.c.strategy)
         .select_from(ev.outerjoin(orders, orders.c.client_order_id == ev.c.client_order_id))
         .where(ev.c.id > after_id).order_by(ev.c.id).limit(limit))
    out: list[dict] = []
    last = after_id
    with store.reading() as conn:
        rows = conn.execute(q).all()
        filled = sorted({r.client_order_id for r in rows if r.kind == "fill"})
        by_order: dict[str, list] = {}
        if filled and "fill" in kinds:
            for f in conn.execute(sa.select(fills).where(fills.c.client_order_id.in_(filled)).order_by(fills.c.ts, fills.c.fill_id)):
                by_order.setdefault(f.client_order_id, []).append(f)
    for r in rows:
        last = r.id
        if r.kind == "fill" and "fill" in kinds:
            for f in by_order.pop(r.client_order_id, []):
                out.append(event(
                    f"fill-{f.fill_id}", "fill", f.ts,
                    f"{f.account}: {f.side} {f.quantity} {f.symbol} @ {f.price} filled ({f.client_order_id})",
                    {"fill_id": f.fill_id, "client_order_id": f.client_order_id, "account": f.account, "symbol": f.symbol,
                     "side": f.side, "quantity": str(f.quantity), "price": str(f.price),
                     "commission": str(f.commission), "realized_pnl": str(f.realized_pnl)},
                ))
        elif r.to_status in ("rejected", "denied") and r.from_status != r.to_status and "rejection" in kinds:
            word = "denied by risk" if r.to_status == "denied" else "rejected by the broker"
            out.append(event(
                f"order-{r.to_status}-{r.id}", f"order_{r.to_status}", r.ts,
                f"{r.account}: {r.side} {r.quantity} {r.symbol} {word}: {r.reason}",
                {"event_id": r.id, "client_order_id": r.client_order_id, "account": r.account, "symbol": r.symbol,
                 "side": r.side, "quantity": None if r.quantity is None else str(r.quantity),
                 "strategy": r.strategy, "status": r.to_status, "reason": r.reason},
            ))
    return out, last


def risk_alert_notifications(store: OpsStore, after_id: int, limit: int = 1000) -> tuple[list[dict], int]:
    """Risk alerts after ``after_id`` (the risk alert webhook's body as ``data``), and the last id read."""
    alerts = store.list_risk_alerts(since_id=after_id, limit=limit)
    out = [event(f"risk-alert-{a.id}", "risk_alert", a.ts, f"{a.level}: {a.message}", a.public()) for a in alerts]
    return out, alerts[-1].id if alerts else after_id


def signal_id(scan: str, symbol: str, ts: datetime, kind: str) -> str:
    """A signal's event id: the scan, symbol, bar and kind identify it (a re-scan writes the same row)."""
    return f"signal-{scan}-{symbol}-{ts.isoformat()}-{kind}"


def signal_notifications(con: Any, min_score: float, since_session: date | None) -> tuple[list[dict], date | None]:
    """``marts.signals`` rows scoring ``min_score`` or more in session ``since_session`` and later
    (None: the newest session only), and the newest session seen. No table: nothing."""
    tables = {r[0] for r in con.sql("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
    if "marts.signals" not in tables:
        return [], since_session
    newest = con.sql("SELECT max(session_date) FROM marts.signals").fetchone()[0]
    if newest is None:
        return [], since_session
    start = since_session or newest
    rows = con.execute(
        """SELECT scan, symbol, timeframe, ts, session_date, kind, direction, score, reason, close
           FROM marts.signals WHERE session_date >= ? AND score >= ? ORDER BY ts, scan, symbol, kind""",
        [start, min_score],
    ).fetchall()
    out = []
    for scan, symbol, timeframe, ts, session, kind, direction, score, reason, close in rows:
        out.append(event(
            signal_id(scan, symbol, ts, kind), "signal", ts,
            f"{scan}: {kind} {symbol} ({direction}, score {score:g}) {reason}",
            {"scan": scan, "symbol": symbol, "timeframe": timeframe, "ts": ts.isoformat(),
             "session_date": session.isoformat(), "kind": kind, "direction": direction, "score": score,
             "reason": reason, "close": close},
        ))
    return out, max(newest, start)


# ---- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Channels:
    """Where events go, from settings: the webhook (URL, secret), email (SMTP), which kinds."""

    webhook_url: str | None
    secret: str | None
    kinds: frozenset[str]
    min_score: float
    risk_on_webhook: bool  # False when alerts_webhook already posts risk alerts to the same URL
    smtp: dict | None

    @classmethod
    def from_settings(cls, s: Settings) -> Channels:
        url = s.notify_webhook_url or s.alert_webhook_url or None
        kinds = frozenset(k.strip() for k in s.notify_events.split(",") if k.strip())
        smtp = None
        if s.smtp_host and s.notify_email_to:
            smtp = {"host": s.smtp_host, "port": s.smtp_port, "user": s.smtp_user, "password": s.smtp_password,
                    "sender": s.smtp_from or f"trading-pipeline@{s.smtp_host}", "starttls": s.smtp_starttls,
                    "to": [a.strip() for a in s.notify_email_to.split(",") if a.strip()]}
        return cls(url, s.alert_webhook_secret, kinds, s.notify_min_score,
                   risk_on_webhook=bool(url) and url != s.alert_webhook_url, smtp=smtp)

    def names(self) -> list[str]:
        return [c for c, on in (("webhook", self.webhook_url), ("email", self.smtp)) if on]

    def for_kind(self, source: str) -> list[str]:
        """The channels a source's events are enqueued for."""
        if source not in self.kinds:
            return []
        return [c for c in self.names() if not (source == "risk" and c == "webhook" and not self.risk_on_webhook)]


# ---- the passes the sensor runs ------------------------------------------------------------
def collect(store: OpsStore, cfg: Channels, warehouse: Callable[[], Any] | None = None,
            now: datetime | None = None) -> dict[str, int]:
    """Enqueue new events of every source since its cursor, then advance the cursor; how many rows
    each source added. ``warehouse`` opens a read-only warehouse connection (signals)."""
    added: dict[str, int] = {}
    if not cfg.names():
        return added
    first = {s: _cursor(store, s) is None for s in ("order_events", "risk_alerts", "signals")}
    # order events: fills and rejections
    start = int(_cursor(store, "order_events") or (store.last_order_event_id() if first["order_events"] else 0))
    events, last = order_event_notifications(store, start, cfg.kinds)
    added["fill"] = enqueue(store, [e for e in events if e["kind"] == "fill"], cfg.for_kind("fill"), now)
    added["rejection"] = enqueue(store, [e for e in events if e["kind"] != "fill"], cfg.for_kind("rejection"), now)
    store.set_cursor(CURSOR + "order_events", str(last))
    # risk alerts
    start = int(_cursor(store, "risk_alerts") or (store.last_risk_alert_id() if first["risk_alerts"] else 0))
    events, last = risk_alert_notifications(store, start)
    added["risk"] = enqueue(store, events, cfg.for_kind("risk"), now)
    store.set_cursor(CURSOR + "risk_alerts", str(last))
    # signals, from the warehouse
    if warehouse is not None and cfg.for_kind("signal"):
        since = _cursor(store, "signals")
        con = warehouse()
        if con is not None:
            try:
                events, newest = signal_notifications(con, cfg.min_score, date.fromisoformat(since) if since else None)
            finally:
                con.close()
            added["signal"] = enqueue(store, events, cfg.for_kind("signal"), now)
            if newest is not None:
                store.set_cursor(CURSOR + "signals", newest.isoformat())
    return added


def message_id(event_id: str) -> str:
    """A mail's ``Message-ID``, the same for every attempt at one event (event ids may hold ``:``,
    which a Message-ID may not: hashed)."""
    return f"<{hashlib.sha256(event_id.encode()).hexdigest()[:32]}@trading-pipeline>"


def send_email(smtp: dict, n: Notification, timeout: float = TIMEOUT) -> str | None:
    """Mail one event to every address; None when the server accepted it, else the error
    (``SMTP <code>...`` when the server answered). Never raises."""
    data = n.data
    msg = EmailMessage()
    msg["Subject"] = f"[trading] {data['text']}"[:200]
    msg["From"] = smtp["sender"]
    msg["To"] = ", ".join(smtp["to"])
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(n.event_id)
    msg["Idempotency-Key"] = n.event_id
    msg.set_content(f"{data['text']}\n\n{json.dumps(data, indent=2, default=str)}\n")
    try:
        with smtplib.SMTP(smtp["host"], smtp["port"], timeout=timeout) as s:
            if smtp["starttls"]:
                s.starttls()
            if smtp["user"]:
                s.login(smtp["user"], smtp["password"])
            s.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"SMTP {exc.smtp_code}: {text}"
    except smtplib.SMTPRecipientsRefused as exc:
        return f"SMTP recipients refused: {', '.join(exc.recipients)}"
    except Exception as exc:  # refused, timeout, TLS, no STARTTLS offered...
        return f"{type(exc).__name__}: {exc}"
    return None


def deliver_all(store: OpsStore, cfg: Channels, *, now: datetime | None = None, max_attempts: int = MAX_ATTEMPTS,
                base_delay: float = BASE_DELAY, timeout: float = TIMEOUT, budget: float = TICK_BUDGET) -> dict[str, Delivery]:
    """One delivery pass per configured channel (each with its own budget and failures)."""
    senders: dict[str, Callable[[Notification], str | None]] = {}
    if cfg.webhook_url:
        url = cfg.webhook_url
        senders["webhook"] = lambda n: post_json(url, n.data, n.event_id, n.event_id, cfg.secret, timeout)
    if cfg.smtp:
        senders["email"] = lambda n: send_email(cfg.smtp, n, timeout)
    return {
        channel: deliver(
            lambda channel=channel: pending(store, channel, max_attempts=max_attempts),
            send, lambda n, ts, err: mark(store, n, ts, err), key=lambda n: n.event_id,
            now=now, base_delay=base_delay, budget=budget, what=f"notification_{channel}",
        )
        for channel, send in senders.items()
    }


# ---- the outbox for operators (`trading notify list|retry|send-test`) -----------------------------
# A row's status follows from its columns, the rules :func:`pending` and :func:`deliver` apply:
# ``delivered`` once a receiver took it; ``failed`` when :data:`MAX_ATTEMPTS` attempts are spent (the
# sensor no longer tries it; its last error is kept); ``pending`` otherwise (new, or waiting out a backoff).
STATUSES = ("pending", "delivered", "failed")
TEST_KIND = "test"


class OutboxError(ValueError):
    """A request about the outbox that cannot be done as asked (unknown event, nothing to retry)."""


def status_of(n: Notification, max_attempts: int = MAX_ATTEMPTS) -> str:
    if n.delivered_at is not None:
        return "delivered"
    return "failed" if n.attempts >= max_attempts else "pending"


def next_attempt_at(n: Notification, base_delay: float = BASE_DELAY) -> datetime | None:
    """When the sensor may try a pending row again (None: at its next tick, or never again)."""
    if n.delivered_at is not None or n.last_attempt_at is None or n.attempts == 0:
        return None
    return n.last_attempt_at + timedelta(seconds=base_delay * 2**n.attempts)


def _status_clause(status: str, max_attempts: int) -> Any:
    n = notifications.c
    if status not in STATUSES:
        raise OutboxError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    if status == "delivered":
        return n.delivered_at.is_not(None)
    undelivered = n.delivered_at.is_(None)
    return sa.and_(undelivered, n.attempts >= max_attempts if status == "failed" else n.attempts < max_attempts)


def outbox(store: OpsStore, *, status: str | None = None, channel: str | None = None, event_id: str | None = None,
           limit: int | None = 50, max_attempts: int = MAX_ATTEMPTS) -> list[Notification]:
    """Outbox rows, newest first (what an operator looks at), filtered by status, channel and event."""
    n = notifications.c
    q = sa.select(notifications).order_by(n.created_at.desc(), n.event_id.desc(), n.channel)
    if status is not None:
        q = q.where(_status_clause(status, max_attempts))
    if channel is not None:
        if channel not in CHANNELS:
            raise OutboxError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
        q = q.where(n.channel == channel)
    if event_id is not None:
        q = q.where(n.event_id == event_id)
    if limit is not None:
        q = q.limit(limit)
    with store.reading() as conn:
        return [Notification(**dict(r._mapping)) for r in conn.execute(q)]


def retry(store: OpsStore, event_id: str | None = None, channel: str | None = None,
          max_attempts: int = MAX_ATTEMPTS) -> list[Notification]:
    """Make given-up rows (of ``event_id``, or every one; of ``channel``) due again: attempts back to
    0 and no last attempt, so the sensor's next pass sends them; the last error stays until then.
    Nothing else changes. Naming an event that has no given-up row raises :class:`OutboxError`
    saying what its rows are; with no event, no given-up row is simply nothing to do."""
    if event_id is not None:
        rows = outbox(store, event_id=event_id, channel=channel, limit=None, max_attempts=max_attempts)
        if not rows:
            where = f" on channel {channel}" if channel else ""
            raise OutboxError(f"no notification {event_id!r}{where}: see `trading notify list`")
        if not any(status_of(r, max_attempts) == "failed" for r in rows):
            states = ", ".join(f"{r.channel} {status_of(r, max_attempts)}" for r in rows)
            raise OutboxError(f"{event_id!r} has not been given up ({states}): only failed rows are retried "
                              "(a delivered one is never sent again; a pending one is still being retried)")
    failed = outbox(store, status="failed", channel=channel, event_id=event_id, limit=None, max_attempts=max_attempts)
    n = notifications.c
    with store.transaction() as conn:
        for r in failed:  # the status clause again: a row delivered meanwhile is left alone
            conn.execute(notifications.update()
                         .where(n.event_id == r.event_id, n.channel == r.channel, _status_clause("failed", max_attempts))
                         .values(attempts=0, last_attempt_at=None))
    return failed


def probe_event(requested_by: str, now: datetime | None = None) -> dict:
    """A ``test`` event with an id of its own (each request is a new event, never deduplicated away)."""
    import secrets  # here: this section is appended, the module's imports stay as they were

    at = now or utcnow()
    event_id = f"test-{at.strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(3)}"
    return event(event_id, TEST_KIND, at, f"Test notification requested by {requested_by}: if you read this, "
                 "the receiver gets trading notifications.", {"requested_by": requested_by})


def send_test(store: OpsStore, cfg: Channels, requested_by: str, channel: str | None = None,
              now: datetime | None = None) -> tuple[dict, list[str]]:
    """Enqueue one test event for every configured channel (or ``channel``), through the same outbox
    the sensor delivers; the event and its channels. No channel configured: :class:`OutboxError`."""
    names = cfg.names()
    if not names:
        raise OutboxError("no notification channel is configured: set TRADING_NOTIFY_WEBHOOK_URL (or "
                          "TRADING_ALERT_WEBHOOK_URL), or TRADING_SMTP_HOST with TRADING_NOTIFY_EMAIL_TO")
    if channel is not None:
        if channel not in names:
            raise OutboxError(f"channel {channel!r} is not configured (configured: {', '.join(names)})")
        names = [channel]
    e = probe_event(requested_by, now)
    enqueue(store, [e], names, now)
    return e, names
