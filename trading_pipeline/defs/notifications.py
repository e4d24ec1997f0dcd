"""Outbound notifications (signals, fills, rejections/denials, risk alerts) from a sensor, so that a
slow or dead receiver never blocks a pipeline run: the ``notifications`` sensor launches no run.

Each tick (every 30 s, always running; a no-op until TRADING_NOTIFY_WEBHOOK_URL or
TRADING_ALERT_WEBHOOK_URL, or TRADING_SMTP_HOST with TRADING_NOTIFY_EMAIL_TO, is set) enqueues the
new events into the ops store's ``notifications`` outbox and delivers what is due. The why and the
rules (event ids, dedup, backoff, give-up) are in ``trading_pipeline/trading/notifications.py``.
"""

from __future__ import annotations

import dagster as dg

from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import Settings, get_settings
from trading_pipeline.trading import notifications as notify


def _warehouse(settings: Settings):
    """A read-only connection to the warehouse, or None while there is none yet (no signals)."""
    path = settings.warehouse_path
    if not wh.exists(path):
        return None
    return wh.connect(path, read_only=True)


def run_tick(settings: Settings) -> tuple[str, bool]:
    """Enqueue new events, then one delivery pass per channel: a one-line summary, and whether
    anything happened. Raises nothing the sensor should fail on: errors land in the summary."""
    from trading_pipeline.trading.store import OpsStore

    cfg = notify.Channels.from_settings(settings)
    if not cfg.names():
        return "no TRADING_NOTIFY_WEBHOOK_URL, TRADING_ALERT_WEBHOOK_URL or SMTP settings: nothing is notified", False
    try:
        store = OpsStore.from_settings(settings)
    except Exception as exc:
        return f"ops store unavailable: {exc}", False
    try:
        collect_error = ""
        try:
            added = notify.collect(store, cfg, lambda: _warehouse(settings))
        except Exception as exc:  # a warehouse being rebuilt, a store hiccup: deliver what is queued
            added = {}
            notify.log.error("notifications_collect_failed", error=exc)
            collect_error = f" (collecting failed: {type(exc).__name__}: {exc})"
        result = notify.deliver_all(store, cfg)
    finally:
        store.close()
    queued = ", ".join(f"{k} {v}" for k, v in added.items() if v) or "nothing new"
    sent = "; ".join(f"{c}: {d.summary()}" for c, d in result.items())
    busy = any(added.values()) or any(d.delivered or d.failed for d in result.values()) or bool(collect_error)
    return f"queued {queued}{collect_error}; {sent}", busy


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Notifies new signals (score >= TRADING_NOTIFY_MIN_SCORE), fills, order rejections/denials "
    "and risk alerts by webhook (TRADING_NOTIFY_WEBHOOK_URL, else TRADING_ALERT_WEBHOOK_URL) and email "
    "(TRADING_SMTP_HOST, TRADING_NOTIFY_EMAIL_TO); at least once, deduplicated by event id, retried with "
    "backoff. A no-op without a channel; launches no runs.",
)
def notifications(context: dg.SensorEvaluationContext):
    summary, busy = run_tick(get_settings())
    if busy:
        context.log.info(f"notifications: {summary}")
    return dg.SkipReason(f"notifications: {summary}")
