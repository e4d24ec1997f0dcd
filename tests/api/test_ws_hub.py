"""The hub in-process: a client that stops reading is dropped with a reason; others unaffected."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from tests.api.support import START, ApiEnv, add_signals
from trading_api.deps import AppState
from trading_api.snapshot import SnapshotReader
from trading_api.ws import Client, Hub
from trading_pipeline.marketdata.warehouse import writer


class FakeSocket:
    """Enough of a Starlette WebSocket for Client: records frames; ``stuck`` never finishes a send."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.frames: list[dict] = []

    async def send_text(self, text: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.frames.append(json.loads(text))


def _publish_signals(env: ApiEnv, days: range) -> None:
    with writer(env.warehouse) as con:
        add_signals(con, [("GOOG", START + timedelta(days=d), "crp_long", 10.0) for d in days])
    env.publish()


def test_slow_client_is_dropped_and_fast_client_gets_everything(api_env: ApiEnv) -> None:
    async def scenario() -> None:
        state = AppState(settings=api_env.settings, reader=SnapshotReader(api_env.snapshot))
        hub = Hub(state, queue_size=5, heartbeat=60)
        await hub.start()
        hub._task.cancel()  # drive the dispatch by hand
        fast, slow = Client(FakeSocket(), hub, 1), Client(FakeSocket(stuck=True), hub, 2)
        for c in (fast, slow):
            hub.clients.add(c)
            c.sender = asyncio.create_task(c.send_loop())
            await hub.subscribe(c, {"signals"}, None)
        head0 = hub.head_seq

        _publish_signals(api_env, range(100, 110))
        await hub._on_new_snapshot(hub._stat())
        assert slow.kicked is None  # one burst is fine
        _publish_signals(api_env, range(110, 112))
        await hub._on_new_snapshot(hub._stat())
        assert slow.kicked and "too slow" in slow.kicked  # still 9 queued from the last burst
        await asyncio.sleep(0.05)
        assert slow.sender.cancelled()
        seqs = [f["seq"] for f in fast.ws.frames if f["type"] == "item"]
        assert seqs == list(range(head0 + 1, head0 + 13))
        fast.sender.cancel()
        await hub.stop()
        state.close()

    asyncio.run(scenario())


def test_resume_with_since_older_than_the_window_reports_a_gap(api_env: ApiEnv) -> None:
    from trading_pipeline.serving.publish import publish_snapshot

    async def scenario() -> None:
        with writer(api_env.warehouse) as con:
            add_signals(con, [("GOOG", START + timedelta(days=d), "crp_long", 10.0) for d in range(200, 205)])
        publish_snapshot(api_env.warehouse, api_env.serving_dir, feed_retention=3)
        state = AppState(settings=api_env.settings, reader=SnapshotReader(api_env.snapshot))
        hub = Hub(state, heartbeat=60)
        await hub.start()
        c = Client(FakeSocket(), hub, 1)
        hub.clients.add(c)
        c.sender = asyncio.create_task(c.send_loop())
        await hub.subscribe(c, {"signals"}, 0)
        await asyncio.sleep(0.05)
        types = [f["type"] for f in c.ws.frames]
        assert types[0] == "gap" and types[1] == "subscribed"
        assert [f["seq"] for f in c.ws.frames if f["type"] == "item"] == [9, 10, 11]
        c.sender.cancel()
        await hub.stop()
        state.close()

    asyncio.run(scenario())


def test_hub_started_without_a_snapshot_pushes_only_the_next_publish(api_env: ApiEnv) -> None:
    import os

    async def scenario() -> None:
        os.unlink(api_env.snapshot)
        state = AppState(settings=api_env.settings, reader=SnapshotReader(api_env.snapshot))
        hub = Hub(state, heartbeat=60)
        await hub.start()
        hub._task.cancel()
        c = Client(FakeSocket(), hub, 1)
        hub.clients.add(c)
        c.sender = asyncio.create_task(c.send_loop())
        await hub.subscribe(c, {"signals"}, None)
        # The pointer is gone but the lake keeps what was published (main.snapshot_meta and
        # the feed), so the next publish feeds only the two new signals (seq 7, 8); the hub
        # pushes that publish's items and none of the retained window (1..6).
        _publish_signals(api_env, range(300, 302))
        await hub._on_new_snapshot(hub._stat())
        await asyncio.sleep(0.05)
        items = [f for f in c.ws.frames if f["type"] == "item"]
        assert [f["seq"] for f in items] == [7, 8]
        assert sum(f["data"]["ts"].startswith(("2024-10-27", "2024-10-28")) for f in items) == 2
        c.sender.cancel()
        await hub.stop()
        state.close()

    asyncio.run(scenario())
