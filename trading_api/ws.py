"""WebSocket push: new feed items of each published snapshot, and order events.

(One module past 500 lines on purpose: the protocol written below and the Hub and Client that
implement it change together, and splitting them would scatter one state machine.)

One background task (``Hub.run``) polls the snapshot file's identity every
``poll_interval`` seconds; when a new snapshot appears it reads the feed items past the last
dispatched ``seq`` and hands each, serialised once, to every subscribed client. Every
``orders_interval`` seconds it reads the ops store's order event log past the last dispatched
event id the same way. Each client has its own outbox and sender task, so a slow client never
delays the others; one that still holds more than ``queue_size`` undelivered live messages
when the next snapshot or batch of order events arrives is disconnected with a reason (close
code 4008) that says where to resume (``since`` and ``orders_since``).

Protocol (JSON text frames). Client -> server::

    {"action": "subscribe", "channels": ["signals", "alerts", "orders", "bars:GOOG"],
     "since": 120, "orders_since": 57}
    {"action": "unsubscribe", "channels": ["alerts"]}
    {"action": "ping"}

Server -> client:

* ``{"type": "subscribed", "channels": [...], "head_seq": N, "oldest_seq": M, "replay": R,
  "orders_head": H, "orders_since": F}``: ``orders_head`` is the newest order event id
  dispatched (null until the ops store has been reached); ``orders_since`` is present when
  this message subscribed ``orders``: order events with id > F follow on this connection
  (F is the requested ``orders_since``, or ``orders_head`` for a live-only subscription).
* ``{"type": "item", "seq": N, "channel": ..., "key": ..., "published_at": ..., "data": {...}}``
* ``{"type": "order", "channel": "orders", "event_id": N, "data": {"event": {...}, "order": {...}}}``
  (``order`` is the order as it stands when the event is read)
* ``{"type": "risk_alert", "channel": "alerts", "source": "risk", "alert_id": N, "data": {...}}``:
  a risk monitoring alert (``trading_pipeline/trading/risk_monitor.py``: a limit's usage at
  ``warn_at_pct``, a limit reached, a drawdown, VaR above its budget), pushed live to ``alerts``
  subscribers once the ops store has it (polled every ``orders_interval`` by alert id, like order
  events). The snapshot's ``since`` does not cover them: a reconnecting client catches up with
  ``GET /risk/alerts?since_id=<last alert_id seen>`` (``risk_alerts_head`` in ``subscribed`` and
  heartbeats is the newest alert id pushed). Only the order job writes them (one at a time: its
  asset pool), so their ids commit in order.
* ``{"type": "gap", "since": S, "oldest_seq": M}``: ``since`` is older than the retained feed.
* ``{"type": "gap", "channel": "orders", "orders_since": N, "orders_head": H, "detail": ...}``:
  ``orders_since`` is ahead of the ops store's order event log (it was reset or replaced);
  order events continue live after H: reload orders over REST.
* ``{"type": "heartbeat", "ts": ..., "head_seq": N, "orders_head": H}``, ``{"type": "pong", ...}``
  (same fields), ``{"type": "error", "detail": ...}`` (the message is ignored).

Channel ``bars`` (or ``bars:*``) subscribes to every symbol's bars. With ``since`` the server
first replays retained items with ``seq > since`` on the requested channels, then continues
live, without gaps or repeats.

The order event id (monotonic in the ops store) is the ``orders`` channel's sequence. With
``orders_since`` (``orders`` must be in ``channels``; ignored if this connection already has
``orders``, which has been getting every event) the server first sends
every order event with ``id > orders_since`` in id order, read from the ops store in pages
of ``order_page`` (the next page only once the client's outbox has drained below a page),
then continues live: the replay runs up to the hub's dispatched head and live dispatch skips
the client until its replay has reached that head, so nothing is missed or sent twice at
the boundary. Without ``orders_since`` the subscription is live from ``orders_head``. To
resume, a client sends the last ``event_id`` it received (or ``orders_since`` of its last
``subscribed`` reply if none came). ``orders_since: 0`` replays the whole log. ``since`` and
``orders_since`` must be integers from 0 to 2**53; anything else gets an ``error`` and the
subscribe message is ignored.

Ids are taken at insert, so on Postgres a later id can commit before an earlier one: the hub
dispatches only a gapless run of ids and holds events behind a missing id for up to
``order_gap_grace`` seconds (the earlier transaction is still committing); after that the id
is taken as rolled back and skipped (logged). SQLite serialises writers, so ids there commit
in order and nothing is ever held.

Every connection races its sender against ``websocket.receive()``, so a client disconnect
or a server shutdown ends both (uvicorn otherwise waits on a push-only loop forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from trading_api.keys import KeyChecker, extract_key
from trading_api.schemas import order_model
from trading_api.snapshot import SnapshotReader, SnapshotUnavailable
from trading_pipeline import logs

if TYPE_CHECKING:
    from trading_pipeline.trading.store import OpsStore


class HubState(Protocol):
    """What the hub needs of the app's state (``deps.AppState`` is one): the snapshot reader,
    the ops store for order events, and the key checker. A protocol, so that this module
    does not import ``deps`` (which holds the hub: the two would import each other)."""

    reader: SnapshotReader

    def store(self) -> OpsStore: ...

    def checker(self) -> KeyChecker: ...

log = logs.get_logger(__name__)
router = APIRouter()

CLOSE_TOO_SLOW = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
MAX_CHANNELS = 200
MAX_ID = 2**53  # resume points are JSON integers; larger ones are refused


def _now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _item_text(seq: int, channel: str, key: str, payload: str, published_at: Any) -> str:
    pa = published_at.isoformat() if isinstance(published_at, datetime) else str(published_at)
    return (
        f'{{"type":"item","seq":{int(seq)},"channel":{json.dumps(channel)},"key":{json.dumps(key)},'
        f'"published_at":{json.dumps(pa)},"data":{payload}}}'
    )


def _resume_point(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def matches(channels: set[str], channel: str) -> bool:
    if channel in channels:
        return True
    if channel.startswith("bars:"):
        return "bars" in channels or "bars:*" in channels
    return False


class Client:
    def __init__(self, ws: WebSocket, hub: Hub, key_id: Any) -> None:
        self.ws = ws
        self.hub = hub
        self.key_id = key_id
        self.channels: set[str] = set()
        self.cursor = hub.head_seq  # every item with seq <= cursor has been considered
        self.orders_cursor = 0  # every order event with id <= orders_cursor has been queued (or skipped)
        self.orders_replay: asyncio.Task | None = None  # while set, live order dispatch skips this client
        # (text, live, feed seq, order event id): the last two are the resume points it carries
        self.out: deque[tuple[str, bool, int | None, int | None]] = deque()
        self.live_queued = 0
        self.ready = asyncio.Event()
        self.kicked: str | None = None
        self.sender: asyncio.Task | None = None
        self.sent = 0
        self.last_sent_seq = 0
        self.last_sent_order_id = 0

    def push(self, text: str, live: bool = True, seq: int | None = None, order_id: int | None = None) -> None:
        if self.kicked:
            return
        if live and self.live_queued >= max(self.hub.queue_size * 20, 50_000):  # memory bound within one burst
            self.too_slow()
            return
        self.out.append((text, live, seq, order_id))
        if live:
            self.live_queued += 1
        self.ready.set()

    def too_slow(self) -> None:
        resume = f"since={self.last_sent_seq}"
        if "orders" in self.channels:
            resume += f" orders_since={self.last_sent_order_id}"
        self.kick(
            f"too slow: {self.live_queued} messages still queued from earlier pushes (limit {self.hub.queue_size}); "
            f"reconnect with {resume}"
        )

    def kick(self, reason: str) -> None:
        if self.kicked:
            return
        self.kicked = reason
        log.warning("ws_kick", key_id=self.key_id, reason=reason)
        self.stop_orders_replay()
        if self.sender is not None:
            self.sender.cancel()

    def stop_orders_replay(self) -> None:
        if self.orders_replay is not None:
            self.orders_replay.cancel()
            self.orders_replay = None

    async def send_loop(self) -> None:
        hb = self.hub.heartbeat
        while True:
            if not self.out:
                self.ready.clear()
                try:
                    await asyncio.wait_for(self.ready.wait(), timeout=hb)
                except TimeoutError:
                    await self.ws.send_text(
                        json.dumps({"type": "heartbeat", "ts": _now_iso(), "head_seq": self.hub.head_seq,
                                    "orders_head": self.hub.orders_head, "risk_alerts_head": self.hub.risk_alerts_head})
                    )
                    continue
            text, live, seq, order_id = self.out.popleft()
            if live:
                self.live_queued -= 1
            await self.ws.send_text(text)
            self.sent += 1
            if seq is not None:
                self.last_sent_seq = seq
            if order_id is not None:
                self.last_sent_order_id = order_id

    async def recv_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is None and msg.get("bytes") is not None:
                text = msg["bytes"].decode("utf-8", "replace")
            await self.handle(text or "")

    def error(self, detail: str) -> None:
        self.push(json.dumps({"type": "error", "detail": detail}), live=False)

    async def handle(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self.error("message is not JSON")
            return
        if not isinstance(msg, dict):
            self.error("message must be a JSON object")
            return
        action = msg.get("action")
        if action == "ping":
            self.push(json.dumps({"type": "pong", "ts": _now_iso(), "head_seq": self.hub.head_seq,
                                  "orders_head": self.hub.orders_head}), live=False)
            return
        if action not in ("subscribe", "unsubscribe"):
            self.error("action must be subscribe, unsubscribe or ping")
            return
        channels = msg.get("channels")
        if (
            not isinstance(channels, list)
            or not channels
            or len(channels) > MAX_CHANNELS
            or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in channels)
        ):
            self.error(f"channels must be a non-empty list of up to {MAX_CHANNELS} names")
            return
        bad = [c for c in channels if c not in ("signals", "alerts", "orders", "bars", "bars:*") and not c.startswith("bars:")]
        if bad:
            self.error(f"unknown channels {bad}; use signals, alerts, orders, bars or bars:SYMBOL")
            return
        channels = [c if not c.startswith("bars:") or c == "bars:*" else "bars:" + c[5:].upper() for c in channels]
        if action == "unsubscribe":
            self.channels -= set(channels)
            if "orders" not in self.channels:
                self.stop_orders_replay()
            self.push(json.dumps({"type": "unsubscribed", "channels": sorted(self.channels)}), live=False)
            return
        since = msg.get("since")
        if since is not None and not _resume_point(since):
            self.error("since must be a non-negative integer seq")
            return
        orders_since = msg.get("orders_since")
        if orders_since is not None:
            if not _resume_point(orders_since):
                self.error("orders_since must be a non-negative integer order event id")
                return
            if "orders" not in channels:
                self.error("orders_since needs the orders channel in channels")
                return
        await self.hub.subscribe(self, set(channels), since, orders_since)


class Hub:
    """Fans snapshot feed items and order events out to WebSocket clients."""

    def __init__(
        self,
        state: HubState,
        *,
        poll_interval: float = 0.2,
        heartbeat: float = 15.0,
        queue_size: int = 1000,
        orders_interval: float = 0.5,
        order_page: int = 500,
        order_gap_grace: float = 2.0,
    ) -> None:
        self.state = state
        self.reader: SnapshotReader = state.reader
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.orders_interval = orders_interval
        self.order_page = order_page
        self.order_gap_grace = order_gap_grace
        self.clients: set[Client] = set()
        self.head_seq = 0
        self.oldest_seq = 1
        self._file_id: tuple | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.orders_head: int | None = None  # every order event id <= this has been dispatched (or skipped)
        self.risk_alerts_head: int | None = None  # every risk alert id <= this has been pushed
        self._order_hole: tuple[int, float] | None = None  # (first missing id, monotonic time first seen)
        self.last_dispatch: dict[str, Any] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            head, oldest, _ = await asyncio.to_thread(self.reader.feed_since, 2**62)
            self.head_seq, self.oldest_seq = head, oldest
            self._file_id = self._stat()
        except SnapshotUnavailable as exc:
            log.warning("ws_hub_start_without_snapshot", reason=exc.reason)
        try:
            await self._poll_orders()  # start of the order event log
            await self._poll_risk_alerts()  # and of the risk alerts
        except Exception as exc:  # ops store down: the poll loop retries
            log.warning("ws_hub_orders_unavailable", error=exc)
        self._task = asyncio.create_task(self.run(), name="ws-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for c in list(self.clients):
            c.kick("server shutting down")

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.reader.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns)

    async def run(self) -> None:
        next_orders = 0.0
        while True:
            try:
                fid = self._stat()
                if fid is not None and fid != self._file_id:
                    await self._on_new_snapshot(fid)
                now = time.monotonic()
                if now >= next_orders:
                    next_orders = now + self.orders_interval
                    await self._poll_orders()
                    await self._poll_risk_alerts()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ws_hub_poll_failed")
            await asyncio.sleep(self.poll_interval)

    # ---- snapshot feed ---------------------------------------------------------------------
    async def _on_new_snapshot(self, fid: tuple) -> None:
        t0 = time.monotonic()
        async with self._lock:
            if self._file_id is None and self.head_seq == 0:
                # First snapshot this process sees (there was none at start): push only what
                # that publish added, not the whole retained window.
                try:
                    gen = await asyncio.to_thread(self.reader.current)
                    self.head_seq = max(0, gen.feed_head_seq - int(gen.meta.get("new_items") or 0))
                    for c in self.clients:
                        c.cursor = max(c.cursor, self.head_seq)
                except SnapshotUnavailable:
                    pass
            try:
                head, oldest, rows = await asyncio.to_thread(self.reader.feed_since, self.head_seq)
            except SnapshotUnavailable as exc:
                log.warning("ws_snapshot_unusable", reason=exc.reason)
                self._file_id = fid  # wait for the next file
                return
            self._file_id = fid
            n = 0
            # A client still holding more than queue_size items from earlier pushes is too far
            # behind: drop it (it can resume with since) rather than buffer without bound.
            for c in list(self.clients):
                if c.live_queued > self.queue_size:
                    c.too_slow()
            for seq, channel, key, payload, published_at in rows:
                text = _item_text(seq, channel, key, payload, published_at)
                for c in list(self.clients):
                    if seq > c.cursor:
                        c.cursor = seq
                        if matches(c.channels, channel):
                            c.push(text, seq=seq)
                n += 1
            self.head_seq = max(self.head_seq, head)
            self.oldest_seq = oldest
            for c in self.clients:
                c.cursor = max(c.cursor, self.head_seq)
        self.last_dispatch = {"items": n, "head_seq": self.head_seq, "ms": (time.monotonic() - t0) * 1000}
        log.info("ws_dispatch", items=n, head_seq=self.head_seq, clients=len(self.clients), duration_ms=round(self.last_dispatch["ms"], 1))

    async def subscribe(
        self, client: Client, channels: set[str], since: int | None, orders_since: int | None = None
    ) -> None:
        async with self._lock:
            new_channels = channels - client.channels
            # "orders" joins client.channels only below, after the last await, with its cursor set:
            # until then live order dispatch ignores this client.
            client.channels |= channels - {"orders"}
            replay: list[tuple[int, str]] = []
            head, oldest = self.head_seq, self.oldest_seq
            if since is not None:
                try:
                    head, oldest, rows = await asyncio.to_thread(self.reader.feed_since, since)
                except SnapshotUnavailable as exc:
                    client.error(f"cannot replay: {exc.reason}")
                    rows = []
                if since < oldest - 1:
                    client.push(json.dumps({"type": "gap", "since": since, "oldest_seq": oldest}), live=False)
                for seq, channel, key, payload, published_at in rows:
                    wanted = new_channels if seq <= client.cursor else client.channels
                    if matches(wanted, channel):
                        replay.append((seq, _item_text(seq, channel, key, payload, published_at)))
                if rows:
                    client.cursor = max(client.cursor, rows[-1][0])
            reply: dict[str, Any] = {
                "type": "subscribed", "channels": [], "head_seq": max(head, self.head_seq), "oldest_seq": oldest,
                "replay": len(replay), "orders_head": self.orders_head, "risk_alerts_head": self.risk_alerts_head,
            }
            orders_from = None
            if "orders" in new_channels:
                # An already subscribed "orders" ignores orders_since: it has been getting every event.
                orders_from = self._start_orders(client, orders_since)
                reply["orders_since"] = orders_from
            reply["channels"] = sorted(client.channels)
            client.push(json.dumps(reply), live=False, order_id=orders_from)
            for seq, text in replay:
                client.push(text, live=False, seq=seq)

    # ---- orders (ops store) ----------------------------------------------------------------
    def _start_orders(self, client: Client, orders_since: int | None) -> int | None:
        """Subscribe ``client`` to orders: live from the head, or replay after ``orders_since``
        first. Synchronous (no await), so no order dispatch can interleave."""
        client.channels.add("orders")
        client.stop_orders_replay()
        if orders_since is None:
            client.orders_cursor = self.orders_head or 0
            return self.orders_head
        client.orders_cursor = orders_since
        client.orders_replay = asyncio.create_task(self._replay_orders(client), name="ws-orders-replay")
        return orders_since

    def _read_order_log(self, after: int, upto: int | None) -> list[tuple[int, str]]:
        """Order events with ``after < id <= upto`` (one page), each serialised once."""
        out = []
        for event_id, e, order in self.state.store().order_event_log(after, upto_id=upto, limit=self.order_page):
            event = {
                "kind": e.kind, "from_status": e.from_status.value if e.from_status else None,
                "to_status": e.to_status.value, "reason": e.reason, "ts": e.ts.isoformat(),
            }
            data = {"event": event, "order": order_model(order).model_dump(mode="json") if order else None}
            out.append((event_id, json.dumps({"type": "order", "channel": "orders", "event_id": event_id, "data": data})))
        return out

    def _last_order_event_id(self) -> int:
        return self.state.store().last_order_event_id()

    async def _poll_orders(self) -> None:
        if self.orders_head is None:  # first contact with the ops store: live starts at its head
            self.orders_head = await asyncio.to_thread(self._last_order_event_id)
            return
        for _ in range(20):  # a burst: several pages per poll
            rows = await asyncio.to_thread(self._read_order_log, self.orders_head, None)
            if self._dispatch_orders(rows) < self.order_page:
                return

    def _dispatch_orders(self, rows: list[tuple[int, str]]) -> int:
        """Push the gapless run of ``rows`` past the head to live subscribers; returns how many.

        Synchronous: the head and every client's order cursor move together."""
        assert self.orders_head is not None
        now = time.monotonic()
        expect = self.orders_head + 1
        run: list[tuple[int, str]] = []
        for event_id, text in rows:
            if event_id > expect:  # ids expect..event_id-1 are not visible (yet)
                if self._order_hole is None or self._order_hole[0] != expect:
                    self._order_hole = (expect, now)
                if now - self._order_hole[1] < self.order_gap_grace:
                    break  # an earlier transaction may still commit them: hold the rest
                log.warning("ws_order_ids_skipped", first=expect, last=event_id - 1)
            run.append((event_id, text))
            expect = event_id + 1
        if not run:
            return 0
        if self._order_hole is not None and self._order_hole[0] <= run[-1][0]:
            self._order_hole = None
        live = [c for c in self.clients if "orders" in c.channels and c.orders_replay is None]
        for c in live:  # as for snapshots: still holding more than queue_size from earlier pushes
            if c.live_queued > self.queue_size:
                c.too_slow()
        for event_id, text in run:
            for c in live:
                if event_id > c.orders_cursor:
                    c.orders_cursor = event_id
                    c.push(text, order_id=event_id)
        self.orders_head = run[-1][0]
        for c in live:
            c.orders_cursor = max(c.orders_cursor, self.orders_head)
        return len(run)

    # ---- risk alerts (ops store) -----------------------------------------------------------
    def _read_risk_alerts(self, after: int) -> list[tuple[int, str]]:
        return [
            (a.id, json.dumps({"type": "risk_alert", "channel": "alerts", "source": "risk", "alert_id": a.id,
                               "data": a.public()}))
            for a in self.state.store().list_risk_alerts(since_id=after, limit=self.order_page)
        ]

    async def _poll_risk_alerts(self) -> None:
        """Push risk alerts past the head to ``alerts`` subscribers (live only; see the docstring)."""
        if self.risk_alerts_head is None:  # first contact: live starts at the newest alert
            self.risk_alerts_head = await asyncio.to_thread(lambda: self.state.store().last_risk_alert_id())
            return
        rows = await asyncio.to_thread(self._read_risk_alerts, self.risk_alerts_head)
        for alert_id, text in rows:
            for c in list(self.clients):
                if "alerts" in c.channels:
                    c.push(text)
            self.risk_alerts_head = alert_id

    async def _replay_orders(self, client: Client) -> None:
        """Send ``client`` the order events past its cursor up to the hub's head, page by page,
        then hand it to live dispatch (in the same step as seeing that it reached the head)."""
        failed = False
        while True:
            head = self.orders_head
            try:
                if head is None:  # the ops store has not been reached yet
                    await asyncio.sleep(self.orders_interval)
                    continue
                if client.orders_cursor > head:
                    last = await asyncio.to_thread(self._last_order_event_id)
                    if client.orders_cursor <= last:  # this hub has not dispatched that far yet
                        await asyncio.sleep(self.orders_interval)
                        continue
                    client.push(
                        json.dumps({
                            "type": "gap", "channel": "orders", "orders_since": client.orders_cursor,
                            "orders_head": self.orders_head,
                            "detail": "orders_since is ahead of the order event log (the ops store was reset or "
                                      "replaced); order events continue after orders_head: reload orders over REST",
                        }),
                        live=False,
                        order_id=self.orders_head,
                    )
                    client.orders_cursor = self.orders_head  # head cannot be None here
                    break
                rows = await asyncio.to_thread(self._read_order_log, client.orders_cursor, head)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ops store unavailable: say so once, keep trying
                log.warning("ws_orders_replay_failed", key_id=client.key_id, error=exc)
                if not failed:
                    client.error(f"cannot replay orders now ({type(exc).__name__}); retrying")
                    failed = True
                await asyncio.sleep(max(self.orders_interval, 1.0))
                continue
            for event_id, text in rows:
                client.push(text, live=False, order_id=event_id)
            if len(rows) < self.order_page:
                client.orders_cursor = head  # everything up to head is queued
                if self.orders_head == head:
                    break  # caught up: from now on live dispatch pushes to it
                continue  # the head moved while reading: the next page
            client.orders_cursor = rows[-1][0]
            while len(client.out) > self.order_page and not client.kicked:  # bounded outbox
                await asyncio.sleep(0.02)
        if client.orders_replay is asyncio.current_task():
            client.orders_replay = None

    # ---- connections -----------------------------------------------------------------------
    async def serve(self, ws: WebSocket) -> None:
        key = extract_key(ws.headers, ws.query_params)
        try:
            record = await asyncio.to_thread(self.state.checker().check, key) if key else None
        except Exception as exc:  # ops store down: cannot check keys
            log.warning("ws_auth_unavailable", error=exc)
            await ws.accept()
            await ws.close(code=CLOSE_TRY_AGAIN, reason="cannot check API keys now (ops store unavailable)")
            return
        await ws.accept()
        if record is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="missing API key" if not key else "invalid or revoked API key")
            return
        client = Client(ws, self, record["id"])
        self.clients.add(client)
        log.info("ws_connect", key_id=client.key_id, clients=len(self.clients))
        client.sender = asyncio.create_task(client.send_loop())
        receiver = asyncio.create_task(client.recv_loop())
        try:
            await asyncio.wait({client.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(client)
            client.stop_orders_replay()
            for t in (client.sender, receiver):
                t.cancel()
            for t in (client.sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
                code = CLOSE_GOING_AWAY if client.kicked == "server shutting down" else CLOSE_TOO_SLOW
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=code, reason=(client.kicked or "closing")[:120]), timeout=2)
            log.info("ws_disconnect", key_id=client.key_id, sent=client.sent, reason=client.kicked or "client closed")


@router.websocket("/ws")
async def ws_endpoint(websocket: WebSocket) -> None:
    """Push channel; see the module docstring for the protocol."""
    await websocket.app.state.trading.hub.serve(websocket)


@router.websocket("/ws/market-data")
async def ws_market_data(websocket: WebSocket) -> None:
    """The same push channel (kept for clients that expect a market-data path)."""
    await websocket.app.state.trading.hub.serve(websocket)
