"""`trading notify list|retry|send-test`: look into the notifications outbox and act on it.

The notifications sensor delivers from an ops-store outbox (trading_pipeline/trading/notifications.py)
and gives a row up after 8 failed attempts, keeping its last error. Without these commands an
operator could only see that in SQL. `list` shows the rows and their status; `retry` makes
given-up rows due again once the receiver is fixed (the sensor sends them at its next tick, with
the same event id, so a receiver that deduplicates sees no double); `send-test` enqueues one test
event through the same outbox, which checks the whole path: settings, sensor, receiver.
"""

from __future__ import annotations

import getpass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from trading_pipeline.cli.output import JsonOpt, console, fail, print_json
from trading_pipeline.settings import get_settings


class Status(StrEnum):
    """An outbox row's status (trading/notifications.py ``STATUSES``)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Channel(StrEnum):
    webhook = "webhook"
    email = "email"


ChannelOpt = Annotated[Channel | None, typer.Option("--channel", "-c", help="Only this channel.")]


def _store() -> Any:
    from trading_pipeline.trading.store import OpsStore  # here: keeps `trading --help` fast

    return OpsStore.from_settings(get_settings())


def _row(n: Any) -> dict[str, Any]:
    from trading_pipeline.trading import notifications as notify

    event = n.data
    return {
        "event_id": n.event_id, "channel": n.channel, "kind": n.kind, "status": notify.status_of(n),
        "attempts": n.attempts, "created_at": n.created_at, "delivered_at": n.delivered_at,
        "last_attempt_at": n.last_attempt_at, "next_attempt_at": notify.next_attempt_at(n),
        "last_error": n.last_error, "text": event.get("text"), "event": event,
    }


def _ts(v: Any) -> str:
    return v.isoformat(sep=" ", timespec="seconds") if v is not None else "-"


def register(app: typer.Typer) -> None:
    """Add `notify` to the `trading` CLI."""
    notify_app = typer.Typer(
        help="The notifications outbox: what was sent, what waits, what was given up (list, retry, send-test).",
        no_args_is_help=True,
    )
    app.add_typer(notify_app, name="notify")

    @notify_app.command("list", short_help="Outbox rows and their status, newest first.")
    def list_cmd(
        status: Annotated[Status | None, typer.Option(
            help="pending: not sent yet or waiting out a backoff. delivered: a receiver took it. "
            "failed: given up after 8 attempts (`trading notify retry`).")] = None,
        channel: ChannelOpt = None,
        limit: Annotated[int, typer.Option(min=1, max=100_000, help="Show the newest N rows.")] = 50,
        json_out: JsonOpt = False,
    ) -> None:
        """Outbox rows, newest first: event id, channel, kind, status, attempts, last error."""
        from trading_pipeline.trading import notifications as notify

        store = _store()
        try:
            rows = [_row(n) for n in notify.outbox(store, status=status and status.value,
                                                   channel=channel and channel.value, limit=limit)]
        finally:
            store.close()
        if json_out:
            print_json(rows)
            return
        if not rows:
            what = " ".join(x for x in (status and status.value, channel and channel.value) if x)
            console.print(f"no {what + ' ' if what else ''}notifications in the outbox")
            return
        table = Table(title=f"notifications (newest {len(rows)})", title_justify="left", header_style="bold cyan")
        for col in ("created (UTC)", "event id", "channel", "kind", "status", "attempts", "delivered / next try", "last error"):
            table.add_column(col, justify="right" if col == "attempts" else "left")
        color = {"delivered": "green", "pending": "yellow", "failed": "red"}
        for r in rows:
            when = _ts(r["delivered_at"]) if r["delivered_at"] else _ts(r["next_attempt_at"])
            table.add_row(_ts(r["created_at"]), r["event_id"], r["channel"], r["kind"],
                          f"[{color[r['status']]}]{r['status']}[/]", str(r["attempts"]), when, r["last_error"] or "")
        console.print(table)

    @notify_app.command("retry", short_help="Send given-up notifications again (EVENT_ID or --failed).")
    def retry_cmd(
        event_id: Annotated[str | None, typer.Argument(help="The event to send again (see `trading notify list`).")] = None,
        failed: Annotated[bool, typer.Option("--failed", help="Every given-up row instead of one event.")] = False,
        channel: ChannelOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Make given-up notifications due again: the sensor sends them at its next tick (same event
        id). Only failed rows change; delivered ones are never sent twice. Exit 2 on an unknown event."""
        from trading_pipeline.trading import notifications as notify

        if (event_id is None) == (not failed):
            fail("give either an EVENT_ID or --failed" if event_id is None else "give an EVENT_ID or --failed, not both",
                 "see them with `trading notify list --status failed`", code=2)
        store = _store()
        try:
            rows = notify.retry(store, event_id=event_id, channel=channel and channel.value)
        except notify.OutboxError as exc:
            fail(str(exc), code=2)
        finally:
            store.close()
        done = [{"event_id": r.event_id, "channel": r.channel, "last_error": r.last_error} for r in rows]
        if json_out:
            print_json({"retried": done})
            return
        if not done:
            console.print("no given-up notifications: nothing to retry")
            return
        for r in done:
            console.print(f"retrying {r['event_id']} ({r['channel']}; last error: {r['last_error']})", soft_wrap=True)
        console.print(f"{len(done)} notification(s) due again: the notifications sensor sends them at its next tick")

    @notify_app.command("send-test", short_help="Queue a test event to check the receiver.")
    def send_test_cmd(channel: ChannelOpt = None, json_out: JsonOpt = False) -> None:
        """Enqueue one test event for every configured channel (or --channel), through the same outbox:
        when the sensor delivers it, the settings, the sensor and the receiver all work."""
        from trading_pipeline.trading import notifications as notify

        settings = get_settings()
        cfg = notify.Channels.from_settings(settings)
        store = _store()
        try:
            event, names = notify.send_test(store, cfg, f"cli:{getpass.getuser()}", channel and channel.value)
        except notify.OutboxError as exc:
            fail(str(exc), "see .env.example, section Outbound notifications", code=2)
        finally:
            store.close()
        if json_out:
            print_json({"event_id": event["id"], "channels": names, "event": event})
            return
        console.print(f"queued test notification {event['id']} for {', '.join(names)}", soft_wrap=True)
        console.print("the notifications sensor delivers it at its next tick (every 30 s while the Dagster daemon "
                      "runs); `trading notify list` then shows it delivered, or its error", soft_wrap=True)
