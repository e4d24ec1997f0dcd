"""WebSocket push: new feed items of each published snapshot, and order updates.

One background task (``Hub.run``) polls the snapshot file's identity every
``poll_interval`` seconds; when a new snapshot appears it reads the feed items past the last
dispatched ``seq`` and hands each, serialised once, to every subscribed client. Each client
has its own outbox and sender task, so a slow client never delays the others; one that still
holds more than ``queue_size`` undelivered items when the next snapshot arrives is
disconnected with a reason (close code 4008) and can resume with ``since``.

Protocol (JSON text frames). Client -> server::

    {"action": "subscribe", "channels": ["signals", "alerts", "orders", "bars:GOOG"], "since": 120}
    {"action": "unsubscribe", "channels": ["alerts"]}
    {"action": "ping"}

Server -> client: ``{"type": "subscribed", "channels": [...], "head_seq": N, "oldest_seq": M}``,
``{"type": "item", "seq": N, "channel": ..., "key": ..., "published_at": ..., "data": {...}}``,
``{"type": "order", "event_id": N, "channel": "orders", "data": {...}}`` (live only),
``{"type": "gap", "since": S, "oldest_seq": M}`` (``since`` is older than the retained feed),
``{"type": "heartbeat", "ts": ..., "head_seq": N}``, ``{"type": "error", "detail": ...}``.

Channel ``bars`` (or ``bars:*``) subscribes to every symbol's bars. With ``since`` the server
first replays retained items with ``seq > since`` on the requested channels, then continues
live, without gaps or repeats.

Every connection races its sender against ``websocket.receive()``, so a client disconnect
or a server shutdown ends both (uvicorn otherwise waits on a push-only loop forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from trading_api.deps import extract_key
from trading_api.snapshot import SnapshotReader, SnapshotUnavailable

if TYPE_CHECKING:
    from trading_api.deps import AppState

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_TOO_SLOW = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
MAX_CHANNELS = 200


def _now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _item_text(seq: int, channel: str, key: str, payload: str, published_at: Any) -> str:
    pa = published_at.isoformat() if isinstance(published_at, datetime) else str(published_at)
    return (
        f'{{"type":"item","seq":{int(seq)},"channel":{json.dumps(channel)},"key":{json.dumps(key)},'
        f'"published_at":{json.dumps(pa)},"data":{payload}}}'
    )


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
        self.out: deque[tuple[str, bool, int | None]] = deque()
        self.live_queued = 0
        self.ready = asyncio.Event()
        self.kicked: str | None = None
        self.sender: asyncio.Task | None = None
        self.sent = 0
        self.last_sent_seq = 0

    def push(self, text: str, live: bool = True, seq: int | None = None) -> None:
        if self.kicked:
            return
        if live and self.live_queued >= max(self.hub.queue_size * 20, 50_000):  # memory bound within one burst
            self.too_slow()
            return
        self.out.append((text, live, seq))
        if live:
            self.live_queued += 1
        self.ready.set()

    def too_slow(self) -> None:
        self.kick(
            f"too slow: {self.live_queued} messages still queued from earlier pushes (limit {self.hub.queue_size}); "
            f"reconnect with since={self.last_sent_seq}"
        )

    def kick(self, reason: str) -> None:
        if self.kicked:
            return
        self.kicked = reason
        log.warning("event=ws_kick key_id=%s reason=%s", self.key_id, reason)
        if self.sender is not None:
            self.sender.cancel()

    async def send_loop(self) -> None:
        hb = self.hub.heartbeat
        while True:
            if not self.out:
                self.ready.clear()
                try:
                    await asyncio.wait_for(self.ready.wait(), timeout=hb)
                except TimeoutError:
                    await self.ws.send_text(
                        json.dumps({"type": "heartbeat", "ts": _now_iso(), "head_seq": self.hub.head_seq})
                    )
                    continue
            text, live, seq = self.out.popleft()
            if live:
                self.live_queued -= 1
            await self.ws.send_text(text)
            self.sent += 1
            if seq is not None:
                self.last_sent_seq = seq

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
            self.push(json.dumps({"type": "pong", "ts": _now_iso(), "head_seq": self.hub.head_seq}), live=False)
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
            self.push(json.dumps({"type": "unsubscribed", "channels": sorted(self.channels)}), live=False)
            return
        since = msg.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            self.error("since must be a non-negative integer seq")
            return
        await self.hub.subscribe(self, set(channels), since)


class Hub:
    """Fans snapshot feed items and order events out to WebSocket clients."""

    def __init__(
        self,
        state: AppState,
        *,
        poll_interval: float = 0.2,
        heartbeat: float = 15.0,
        queue_size: int = 1000,
        orders_interval: float = 0.5,
    ) -> None:
        self.state = state
        self.reader: SnapshotReader = state.reader
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.orders_interval = orders_interval
        self.clients: set[Client] = set()
        self.head_seq = 0
        self.oldest_seq = 1
        self._file_id: tuple | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._order_event_id: int | None = None
        self.last_dispatch: dict[str, Any] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            head, oldest, _ = await asyncio.to_thread(self.reader.feed_since, 2**62)
            self.head_seq, self.oldest_seq = head, oldest
            self._file_id = self._stat()
        except SnapshotUnavailable as exc:
            log.warning("event=ws_hub_start_without_snapshot reason=%s", exc.reason)
        try:
            await asyncio.to_thread(self._read_order_events, False)  # start of the order event log
        except Exception as exc:  # ops store down: the poll loop retries
            log.warning("event=ws_hub_orders_unavailable error=%s", exc)
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
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=ws_hub_poll_failed")
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
                log.warning("event=ws_snapshot_unusable reason=%s", exc.reason)
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
        log.info("event=ws_dispatch items=%s head_seq=%s clients=%s duration_ms=%.1f", n, self.head_seq, len(self.clients), self.last_dispatch["ms"])

    async def subscribe(self, client: Client, channels: set[str], since: int | None) -> None:
        async with self._lock:
            new_channels = channels - client.channels
            client.channels |= channels
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
            client.push(
                json.dumps(
                    {"type": "subscribed", "channels": sorted(client.channels), "head_seq": max(head, self.head_seq),
                     "oldest_seq": oldest, "replay": len(replay)}
                ),
                live=False,
            )
            for seq, text in replay:
                client.push(text, live=False, seq=seq)

    # ---- orders (ops store) ----------------------------------------------------------------
    def _read_order_events(self, wanted: bool) -> list[dict[str, Any]]:
        """Order events since the last poll; without subscribers only the cursor moves."""
        import sqlalchemy as sa

        from trading_api.routers.orders import order_model
        from trading_pipeline.ops_store import order_events

        store = self.state.store()
        with store.reading() as conn:
            if self._order_event_id is None or not wanted:
                self._order_event_id = conn.execute(sa.select(sa.func.max(order_events.c.id))).scalar() or 0
                return []
            rows = conn.execute(
                sa.select(order_events).where(order_events.c.id > self._order_event_id).order_by(order_events.c.id).limit(1000)
            ).all()
        out = []
        for r in rows:
            self._order_event_id = r.id
            order = store.get_order(r.client_order_id)
            out.append(
                {
                    "type": "order", "channel": "orders", "event_id": r.id,
                    "data": {
                        "event": {"kind": r.kind, "from_status": r.from_status, "to_status": r.to_status, "reason": r.reason, "ts": r.ts.isoformat()},
                        "order": order_model(order).model_dump(mode="json") if order else None,
                    },
                }
            )
        return out

    async def _poll_orders(self) -> None:
        wanted = any("orders" in c.channels for c in self.clients)
        events = await asyncio.to_thread(self._read_order_events, wanted)
        for e in events:
            text = json.dumps(e)
            for c in list(self.clients):
                if "orders" in c.channels:
                    c.push(text)

    # ---- connections -----------------------------------------------------------------------
    async def serve(self, ws: WebSocket) -> None:
        key = extract_key(ws.headers, ws.query_params)
        try:
            record = await asyncio.to_thread(self.state.checker().check, key) if key else None
        except Exception as exc:  # ops store down: cannot check keys
            log.warning("event=ws_auth_unavailable error=%s", exc)
            await ws.accept()
            await ws.close(code=CLOSE_TRY_AGAIN, reason="cannot check API keys now (ops store unavailable)")
            return
        await ws.accept()
        if record is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="missing API key" if not key else "invalid or revoked API key")
            return
        client = Client(ws, self, record["id"])
        self.clients.add(client)
        log.info("event=ws_connect key_id=%s clients=%s", client.key_id, len(self.clients))
        client.sender = asyncio.create_task(client.send_loop())
        receiver = asyncio.create_task(client.recv_loop())
        try:
            await asyncio.wait({client.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(client)
            for t in (client.sender, receiver):
                t.cancel()
            for t in (client.sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
                code = CLOSE_GOING_AWAY if client.kicked == "server shutting down" else CLOSE_TOO_SLOW
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=code, reason=(client.kicked or "closing")[:120]), timeout=2)
            log.info("event=ws_disconnect key_id=%s sent=%s reason=%s", client.key_id, client.sent, client.kicked or "client closed")


@router.websocket("/ws")
async def ws_endpoint(websocket: WebSocket) -> None:
    """Push channel; see the module docstring for the protocol."""
    await websocket.app.state.trading.hub.serve(websocket)


@router.websocket("/ws/market-data")
async def ws_market_data(websocket: WebSocket) -> None:
    """The same push channel (kept for clients that expect a market-data path)."""
    await websocket.app.state.trading.hub.serve(websocket)
