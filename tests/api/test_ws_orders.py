"""The ``orders`` WebSocket channel: the order event id is its sequence, ``orders_since`` resumes.

End to end (a real uvicorn process, real websockets clients, orders through REST and the
ops store) and in-process (the hub driven by hand) for what timing cannot reach reliably:
paging a replay while live events arrive, a slow client, and Postgres committing a later
event id before an earlier one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
import websockets

from tests.api.support import ApiEnv, Server, frames, recv_json, subscribe
from trading_api.deps import AppState
from trading_api.snapshot import SnapshotReader
from trading_api.ws import Client, Hub
from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus, Side
from trading_pipeline.trading.orders import Order, utcnow
from trading_pipeline.trading.store import OpsStore
from trading_pipeline.trading.store.schema import order_events

pytestmark = [pytest.mark.timeout(120)]


# ---- helpers ---------------------------------------------------------------------------------
async def _orders(ws, until_id: int | None = None, n: int | None = None, timeout: float = 8.0, quiet: float = 0.0) -> list[dict]:
    """Order frames until one with ``event_id >= until_id`` (or ``n`` of them), then ``quiet``
    more seconds to catch anything extra (a repeat or an event beyond what was expected)."""
    out = await frames(ws, "order", timeout, lambda out: (until_id is not None and bool(out) and out[-1]["event_id"] >= until_id)
                       or (n is not None and len(out) >= n))
    return out + await frames(ws, "order", quiet)


def _log_ids(env: ApiEnv, after: int = 0) -> list[int]:
    store = OpsStore(env.store_url)
    try:
        return [i for i, _e, _o in store.order_event_log(after, limit=100_000)]
    finally:
        store.close()


def _new_order(store: OpsStore, coid: str, symbol: str = "GOOG") -> str:
    store.insert_order(Order(client_order_id=coid, account="paper", symbol=symbol, side=Side.BUY, quantity=Decimal(1)))
    return coid


def _fill(env: ApiEnv, coid: str, qty: int, price: str) -> None:
    """Book the broker's fill in the ops store, the way the order job syncs a paper fill."""
    store = OpsStore(env.store_url)
    try:
        fill = BrokerFill(f"{coid}-f1", coid, Decimal(qty), Decimal(price), Decimal("1"), datetime(2024, 3, 1))
        store.sync_from_broker(
            coid,
            BrokerOrder(coid, f"paper-{coid}", "GOOG", Side.BUY, Decimal(qty), Decimal(qty), OrderStatus.FILLED, Decimal(price), fills=(fill,)),
        )
    finally:
        store.close()


def _post_order(env: ApiEnv, server: Server, key: str, qty: int = 2) -> str:
    r = httpx.post(
        f"{server.url}/orders", json={"symbol": "GOOG", "side": "buy", "quantity": str(qty)},
        headers={**env.headers(), "Idempotency-Key": key}, timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()["order"]["client_order_id"]


# ---- end to end ------------------------------------------------------------------------------
@pytest.mark.e2e
def test_live_order_events_have_increasing_ids_and_heads_are_reported(api_env: ApiEnv, server: Server) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{server.ws_url}/ws?api_key={api_env.key}") as ws:
            sub, _ = await subscribe(ws, ["orders"])
            head = sub["orders_head"]
            assert isinstance(head, int) and sub["orders_since"] == head  # live from the head
            coids = [await asyncio.to_thread(_post_order, api_env, server, f"live-{i}") for i in range(3)]
            got = await _orders(ws, n=6, quiet=0.8)
            ids = [m["event_id"] for m in got]
            assert ids == _log_ids(api_env, head), ids  # every event after the head, once, in order
            assert ids[0] > head and ids == sorted(set(ids))
            assert [m["data"]["order"]["client_order_id"] for m in got] == [c for c in coids for _ in (0, 1)]
            assert [m["data"]["event"]["to_status"] for m in got] == ["new", "accepted"] * 3
            assert all(m["channel"] == "orders" for m in got)
            while (m := await recv_json(ws, 5))["type"] != "heartbeat":  # TRADING_WS_HEARTBEAT=2
                pass
            assert m["orders_head"] == ids[-1]
            await ws.send(json.dumps({"action": "ping"}))
            while (m := await recv_json(ws, 5))["type"] != "pong":
                pass
            assert m["orders_head"] == ids[-1]

    asyncio.run(scenario())


@pytest.mark.e2e
def test_reconnect_with_orders_since_gets_exactly_the_missed_events_then_live(api_env: ApiEnv, server: Server) -> None:
    async def scenario() -> None:
        url = f"{server.ws_url}/ws?api_key={api_env.key}"
        async with websockets.connect(url) as ws:
            await subscribe(ws, ["orders", "signals"])
            a = await asyncio.to_thread(_post_order, api_env, server, "resume-a")
            seen = await _orders(ws, n=2)
            assert [m["data"]["order"]["client_order_id"] for m in seen] == [a, a]
            last = seen[-1]["event_id"]

        # Disconnected: one order placed and cancelled through REST, the first one filled.
        b = await asyncio.to_thread(_post_order, api_env, server, "resume-b")
        async with httpx.AsyncClient(base_url=server.url, headers=api_env.headers(), timeout=10) as c:
            r = await c.delete(f"/orders/{b}")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        await asyncio.to_thread(_fill, api_env, a, 2, "120.50")
        missed = _log_ids(api_env, last)
        assert len(missed) >= 5  # b: new, accepted, cancel request(s), cancelled; a: fill

        async with websockets.connect(url) as ws:
            sub, _ = await subscribe(ws, ["orders", "signals"], orders_since=last)
            assert sub["orders_since"] == last
            got = await _orders(ws, until_id=missed[-1], quiet=0.8)
            assert [m["event_id"] for m in got] == missed  # the missed ones, in order, each once
            assert [m["data"]["order"]["client_order_id"] for m in got[:2]] == [b, b]
            assert got[-1]["data"]["event"]["to_status"] == "filled"
            assert got[-1]["data"]["order"]["status"] == "filled"
            assert [m["data"]["event"]["to_status"] for m in got if m["data"]["order"]["client_order_id"] == b][-1] == "cancelled"
            # then live, continuing from the last replayed id without a gap or a repeat
            c_ = await asyncio.to_thread(_post_order, api_env, server, "resume-c")
            live = await _orders(ws, n=2, quiet=0.8)
            assert [m["event_id"] for m in live] == _log_ids(api_env, missed[-1])
            assert [m["data"]["order"]["client_order_id"] for m in live] == [c_, c_]

    asyncio.run(scenario())


@pytest.mark.e2e
def test_resume_while_orders_keep_arriving_has_no_gap_or_repeat_at_the_boundary(api_env: ApiEnv, server: Server) -> None:
    """A writer inserts orders every few ms across the whole reconnect: the replay (read up to
    the hub's head) and live dispatch (after it) meet without a gap or a repeat."""
    stop = threading.Event()

    def writer() -> None:
        store = OpsStore(api_env.store_url)
        try:
            i = 0
            while not stop.is_set():
                coid = _new_order(store, f"busy-{i}")
                store.transition(coid, "accepted", "test")
                i += 1
                time.sleep(0.005)
        finally:
            store.close()

    async def scenario() -> None:
        t = threading.Thread(target=writer)
        t.start()
        try:
            await asyncio.sleep(0.5)
            since = _log_ids(api_env)[-1] - 10  # some before and everything during the subscribe
            async with websockets.connect(f"{server.ws_url}/ws?api_key={api_env.key}") as ws:
                sub, _ = await subscribe(ws, ["orders"], orders_since=since)
                assert sub["orders_since"] == since
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.to_thread(t.join)
                final = _log_ids(api_env, since)
                got = await _orders(ws, until_id=final[-1], timeout=10, quiet=0.8)
            ids = [m["event_id"] for m in got]
            assert len(final) > 50
            assert ids == final, (len(ids), len(final), sorted(set(final) - set(ids))[:5], len(ids) - len(set(ids)))
        finally:
            stop.set()
            t.join()

    asyncio.run(scenario())


@pytest.mark.e2e
def test_orders_since_zero_replays_the_whole_log(api_env: ApiEnv, server: Server) -> None:
    for i in range(3):
        _post_order(api_env, server, f"zero-{i}")
    every = _log_ids(api_env)
    assert len(every) == 6

    async def scenario() -> None:
        async with websockets.connect(f"{server.ws_url}/ws?api_key={api_env.key}") as ws:
            sub, _ = await subscribe(ws, ["orders"], orders_since=0)
            assert sub["orders_since"] == 0
            got = await _orders(ws, until_id=every[-1], quiet=0.8)
            assert [m["event_id"] for m in got] == every
            assert [m["data"]["event"]["kind"] for m in got[:2]] == ["created", "transition"]

    asyncio.run(scenario())


@pytest.mark.e2e
def test_invalid_orders_since_gets_an_error_and_the_connection_stays_usable(api_env: ApiEnv, server: Server) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{server.ws_url}/ws?api_key={api_env.key}") as ws:
            for bad in (-1, "3", 1.5, True, 2**60, [1], {"orders": 1}):
                await ws.send(json.dumps({"action": "subscribe", "channels": ["orders"], "orders_since": bad}))
                m = await recv_json(ws)
                assert m["type"] == "error" and "orders_since" in m["detail"], (bad, m)
            await ws.send(json.dumps({"action": "subscribe", "channels": ["signals"], "orders_since": 1}))
            m = await recv_json(ws)
            assert m["type"] == "error" and "orders channel" in m["detail"]
            # nothing was subscribed by the refused messages
            await ws.send(json.dumps({"action": "unsubscribe", "channels": ["alerts"]}))
            assert await recv_json(ws) == {"type": "unsubscribed", "channels": []}

            # A resume point beyond the log (the ops store was reset): told so, then live.
            sub, _ = await subscribe(ws, ["orders"], orders_since=10**6)
            assert sub["orders_since"] == 10**6
            gap = await recv_json(ws)
            assert gap["type"] == "gap" and gap["channel"] == "orders" and gap["orders_head"] == sub["orders_head"]
            coid = await asyncio.to_thread(_post_order, api_env, server, "after-gap")
            got = await _orders(ws, n=2)
            assert [m["data"]["order"]["client_order_id"] for m in got] == [coid, coid]
            assert got[0]["event_id"] > sub["orders_head"]

    asyncio.run(scenario())


# ---- the hub in-process ----------------------------------------------------------------------
class FakeSocket:
    """Enough of a Starlette WebSocket for Client: records frames; while ``stuck`` a send waits."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.frames: list[dict] = []

    async def send_text(self, text: str) -> None:
        while self.stuck:
            await asyncio.sleep(0.005)
        self.frames.append(json.loads(text))


def _ids(c: Client) -> list[int]:
    return [f["event_id"] for f in c.ws.frames if f["type"] == "order"]


async def _hub(state: AppState, **kw) -> Hub:
    hub = Hub(state, heartbeat=60, **kw)
    await hub.start()
    hub._task.cancel()  # drive the polls by hand
    return hub


async def _client(hub: Hub, key_id: int, stuck: bool = False) -> Client:
    c = Client(FakeSocket(stuck), hub, key_id)
    hub.clients.add(c)
    c.sender = asyncio.create_task(c.send_loop())
    return c


async def _close(hub: Hub, state: AppState, *clients: Client) -> None:
    for c in clients:
        c.kick("test over")
    await hub.stop()
    state.close()


def test_replay_in_pages_hands_over_to_live_without_gap_or_repeat(api_env: ApiEnv) -> None:
    async def scenario() -> None:
        state = AppState(settings=api_env.settings, reader=SnapshotReader(api_env.snapshot))
        store = state.store()
        for i in range(10):
            _new_order(store, f"old-{i}")
        hub = await _hub(state, order_page=3)
        assert hub.orders_head == 10
        watcher = await _client(hub, 1)  # live all along
        await hub.subscribe(watcher, {"orders"}, None)
        c = await _client(hub, 2, stuck=True)  # holds its outbox: the replay waits after a page
        await hub.subscribe(c, {"orders"}, None, orders_since=2)
        await asyncio.sleep(0.1)
        # the stuck send holds the subscribed reply; two pages (3..8) queued, over one page: waiting
        assert c.orders_replay is not None and c.orders_cursor == 8 and len(c.out) == 6
        for i in range(2):  # live events while it replays: not pushed to it, the replay reads them
            _new_order(store, f"during-{i}")
        await hub._poll_orders()
        assert hub.orders_head == 12 and _ids(watcher) == []  # (the watcher's sender has not run yet)
        assert [t for t, *_ in c.out if '"order"' in t] and c.live_queued == 0
        c.ws.stuck = False  # the client reads again
        polls = 0
        deadline = time.monotonic() + 20
        while c.orders_replay is not None and time.monotonic() < deadline:
            if polls < 20:  # more keep coming while the replay pages through
                _new_order(store, f"new-{polls}")
            await hub._poll_orders()
            polls += 1
            await asyncio.sleep(0.001)
        assert c.orders_replay is None, "the replay never reached the head"
        for j in range(3):  # and after it, live
            _new_order(store, f"after-{j}")
            await hub._poll_orders()
        await asyncio.sleep(0.05)
        last = store.last_order_event_id()
        assert _ids(c) == list(range(3, last + 1))
        assert _ids(watcher) == list(range(11, last + 1))
        sub = c.ws.frames[0]
        assert sub["type"] == "subscribed" and sub["orders_since"] == 2 and sub["orders_head"] == 10
        # resubscribing "orders" while subscribed ignores orders_since (no repeats)
        await c.handle(json.dumps({"action": "subscribe", "channels": ["orders"], "orders_since": 0}))
        assert c.orders_replay is None
        await asyncio.sleep(0.05)
        assert _ids(c) == list(range(3, last + 1))
        await _close(hub, state, c, watcher)

    asyncio.run(scenario())


def test_slow_order_subscriber_is_dropped_with_its_resume_point_and_others_get_everything(api_env: ApiEnv) -> None:
    async def scenario() -> None:
        state = AppState(settings=api_env.settings, reader=SnapshotReader(api_env.snapshot))
        store = state.store()
        hub = await _hub(state, queue_size=5)
        fast, slow = await _client(hub, 1), await _client(hub, 2, stuck=True)
        for c in (fast, slow):
            await hub.subscribe(c, {"orders"}, None)
        head0 = hub.orders_head
        for i in range(10):
            _new_order(store, f"burst-{i}")
        await hub._poll_orders()
        assert slow.kicked is None  # one burst is fine
        await asyncio.sleep(0.05)  # the time to the next poll: the fast client sends its burst
        assert fast.live_queued == 0 and slow.live_queued == 10
        for i in range(2):
            _new_order(store, f"more-{i}")
        await hub._poll_orders()
        assert slow.kicked and "too slow" in slow.kicked and f"orders_since={head0}" in slow.kicked
        await asyncio.sleep(0.05)
        assert slow.sender.cancelled()
        assert _ids(fast) == list(range(head0 + 1, head0 + 13))
        await _close(hub, state, fast)

    asyncio.run(scenario())


def test_postgres_later_id_committed_first_is_held_until_the_earlier_one_commits(api_env: ApiEnv, pg_cluster, pg_database) -> None:
    """On Postgres ids are taken at insert: a transaction holding id k can commit after the
    one holding k+1. The hub must not push k+1 first (a client resuming after k+1 would never
    get k); a rolled-back id is skipped after ``order_gap_grace``."""
    settings = api_env.settings.model_copy(update={"ops_url": pg_cluster.url(pg_database)})

    async def scenario() -> None:
        state = AppState(settings=settings, reader=SnapshotReader(api_env.snapshot))
        store = state.store()
        coid = _new_order(store, "pg-1")
        hub = await _hub(state, order_gap_grace=0.5)
        c = await _client(hub, 1)
        await hub.subscribe(c, {"orders"}, None)
        head = hub.orders_head

        def open_event() -> tuple[sa.Connection, sa.Transaction]:
            conn = store.engine.connect()
            tx = conn.begin()
            conn.execute(order_events.insert().values(
                client_order_id=coid, ts=utcnow(), kind="note", from_status="new", to_status="new", reason="slow writer"))
            return conn, tx

        conn, tx = open_event()  # takes head + 1, not committed
        store.note(coid, "fast writer")  # takes head + 2, committed
        await hub._poll_orders()
        await asyncio.sleep(0.05)
        assert _ids(c) == [] and hub.orders_head == head  # held behind the missing id
        tx.commit()
        conn.close()
        await hub._poll_orders()
        await asyncio.sleep(0.05)
        assert _ids(c) == [head + 1, head + 2]
        assert [f["data"]["event"]["reason"] for f in c.ws.frames if f["type"] == "order"] == ["slow writer", "fast writer"]

        conn, tx = open_event()  # head + 3 ...
        store.note(coid, "after a rollback")  # head + 4
        tx.rollback()  # ... never appears
        conn.close()
        await hub._poll_orders()
        await asyncio.sleep(0.05)
        assert _ids(c) == [head + 1, head + 2]  # within the grace period: still waiting
        await asyncio.sleep(0.6)
        await hub._poll_orders()
        await asyncio.sleep(0.05)
        assert _ids(c) == [head + 1, head + 2, head + 4] and hub.orders_head == head + 4
        await _close(hub, state, c)

    asyncio.run(scenario())
