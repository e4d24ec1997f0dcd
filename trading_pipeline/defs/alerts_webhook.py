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

The request and the delivery pass are the ones the other notifications use
(``trading_pipeline/trading/notifications.py``: signals, fills, rejections, email), kept in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg

from trading_pipeline.settings import get_settings
from trading_pipeline.trading.notifications import (
    BASE_DELAY,
    BATCH,
    MAX_ATTEMPTS,
    TICK_BUDGET,
    TIMEOUT,
    Delivery,
    deliver,
    due,
    post_json,
    signature,
)

if TYPE_CHECKING:
    from trading_pipeline.trading.store import OpsStore, RiskAlert

__all__ = ["BASE_DELAY", "MAX_ATTEMPTS", "TICK_BUDGET", "TIMEOUT", "Delivery", "alerts_webhook", "deliver_pending",
           "due", "post_alert", "signature"]


def post_alert(url: str, alert: RiskAlert, secret: str | None = None, timeout: float = TIMEOUT) -> str | None:
    """POST one alert; None when the receiver answered 2xx, else the error as a sentence. Never raises."""
    return post_json(url, alert.public(), str(alert.id), f"risk-alert-{alert.id}", secret, timeout,
                     agent="trading-pipeline-alerts")


def deliver_pending(
    store: OpsStore, url: str, secret: str | None = None, *, now: datetime | None = None,
    max_attempts: int = MAX_ATTEMPTS, base_delay: float = BASE_DELAY, timeout: float = TIMEOUT,
    budget: float = TICK_BUDGET,
) -> Delivery:
    """POST every undelivered, due alert once (see the module docstring): the delivery pass the
    notifications share (``trading/notifications.deliver``) over the ``risk_alerts`` outbox.
    Never raises: an ops store error ends the pass (in ``stopped``)."""
    return deliver(
        lambda: store.undelivered_risk_alerts(max_attempts=max_attempts, limit=BATCH),
        lambda a: post_alert(url, a, secret, timeout),
        lambda a, ts, error: store.mark_risk_alert_attempt(a.id, ts, error),
        key=lambda a: a.id, now=now, base_delay=base_delay, budget=budget, what="risk_alert_webhook",
    )


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
