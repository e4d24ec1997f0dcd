"""Risk alerts to an outbound webhook: the ops store's ``risk_alerts`` table is the outbox.

The ``alerts_webhook`` sensor (always running; a no-op while ``TRADING_ALERT_WEBHOOK_URL`` is
empty, so setting the URL and restarting is all it takes) POSTs every undelivered alert, oldest
first, every 30 seconds. It launches no run and never touches the pipeline's runs: a slow or
dead receiver only delays alerts.

Each request: ``POST <url>``, body the alert as JSON (``RiskAlert.public``: ``id``,
``source: "risk"``, ``account``, ``kind``, ``level``, ``value``, ``limit``, ``message``,
``session_date``, ``ts``), headers ``Content-Type: application/json``, ``Idempotency-Key:
risk-alert-<id>``, ``X-Event-Id: <id>`` and, with ``TRADING_ALERT_WEBHOOK_SECRET``,
``X-Signature: sha256=<hex HMAC-SHA256 of the raw body keyed by the secret>`` (a receiver
recomputes it over the bytes it received and compares in constant time). Timeout
:data:`TIMEOUT` seconds. Any 2xx marks the alert delivered; anything else (another status, a
refused connection, a timeout) is an attempt with its error kept in ``last_error``, retried
no sooner than ``2^attempts x 30`` s after the last attempt (60 s, 120 s, ... ), and given up
after :data:`MAX_ATTEMPTS` (the alert stays in the store with its error). Delivery is at least
once: a crash between the receiver's answer and the mark sends it again with the same
``Idempotency-Key``. A connection failure ends the tick (the receiver is down; the next tick tries
again), and a tick stops after :data:`TICK_BUDGET` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.settings import get_settings

if TYPE_CHECKING:
    from trading_pipeline.trading.store import OpsStore, RiskAlert

log = logs.get_logger(__name__)

TIMEOUT = 5.0  # seconds per request
MAX_ATTEMPTS = 8  # then the alert is given up (last_error kept)
BASE_DELAY = 30.0  # seconds: the next attempt comes 2^attempts x this after the last one
TICK_BUDGET = 40.0  # seconds of delivering per sensor tick
BATCH = 100  # alerts considered per tick


def signature(body: bytes, secret: str) -> str:
    """The ``X-Signature`` header's value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an error: it would drop the body
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_alert(url: str, alert: RiskAlert, secret: str | None = None, timeout: float = TIMEOUT) -> str | None:
    """POST one alert; None when the receiver answered 2xx, else the error as a sentence. Never raises."""
    body = json.dumps(alert.public(), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json", "User-Agent": "trading-pipeline-alerts",
        "Idempotency-Key": f"risk-alert-{alert.id}", "X-Event-Id": str(alert.id),
    }
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


def due(alert: RiskAlert, now: datetime, base_delay: float = BASE_DELAY) -> bool:
    """Whether the backoff allows another attempt at ``now``."""
    if alert.last_attempt_at is None or alert.attempts == 0:
        return True
    return now >= alert.last_attempt_at + timedelta(seconds=base_delay * 2**alert.attempts)


@dataclass
class Delivery:
    """What one pass did (alert ids)."""

    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    waiting: int = 0  # not due yet (backoff)
    stopped: str | None = None  # why the pass ended early

    def summary(self) -> str:
        out = f"delivered {len(self.delivered)}, failed {len(self.failed)}, waiting {self.waiting}"
        return out + (f" ({self.stopped})" if self.stopped else "")


def deliver_pending(
    store: OpsStore, url: str, secret: str | None = None, *, now: datetime | None = None,
    max_attempts: int = MAX_ATTEMPTS, base_delay: float = BASE_DELAY, timeout: float = TIMEOUT,
    budget: float = TICK_BUDGET,
) -> Delivery:
    """POST every undelivered, due alert once (see the module docstring). Never raises: an ops
    store error ends the pass (in ``stopped``)."""
    from trading_pipeline.trading.orders import utcnow

    out = Delivery()
    start = time.monotonic()
    try:
        pending = store.undelivered_risk_alerts(max_attempts=max_attempts, limit=BATCH)
        for alert in pending:
            at = now or utcnow()
            if not due(alert, at, base_delay):
                out.waiting += 1
                continue
            if time.monotonic() - start > budget:
                out.stopped = f"tick budget of {budget:g} s used"
                break
            error = post_alert(url, alert, secret, timeout)
            store.mark_risk_alert_attempt(alert.id, now or utcnow(), error)
            if error is None:
                out.delivered.append(alert.id)
                continue
            out.failed[alert.id] = error
            log.warning("risk_alert_webhook_failed", alert_id=alert.id, attempt=alert.attempts + 1, error=error)
            if not error.startswith("HTTP "):  # the receiver is unreachable: the rest would fail alike
                out.stopped = "receiver unreachable"
                break
    except Exception as exc:  # the ops store: try again next tick
        out.stopped = f"{type(exc).__name__}: {exc}"
        log.error("risk_alert_webhook_pass_failed", error=exc)
    return out


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts risk alerts (risk.yaml's warning thresholds, recorded by ops/orders) to "
    "TRADING_ALERT_WEBHOOK_URL, signed with TRADING_ALERT_WEBHOOK_SECRET, retried with backoff. "
    "A no-op without a URL; launches no runs.",
)
def alerts_webhook(context: dg.SensorEvaluationContext):
    settings = get_settings()
    if not settings.alert_webhook_url:
        return dg.SkipReason("no TRADING_ALERT_WEBHOOK_URL: risk alerts are not posted")
    from trading_pipeline.trading.store import OpsStore

    try:
        store = OpsStore.from_settings(settings)
    except Exception as exc:
        return dg.SkipReason(f"ops store unavailable: {exc}")
    try:
        result = deliver_pending(store, settings.alert_webhook_url, settings.alert_webhook_secret)
    finally:
        store.close()
    if result.delivered or result.failed:
        context.log.info(f"risk alert webhook: {result.summary()}")
    return dg.SkipReason(f"risk alert webhook: {result.summary()}")
