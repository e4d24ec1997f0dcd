"""End to end: a real API server, a real Dagster scan writing the warehouse, a real WebSocket client.

The client receives the new signals pushed after the build, and REST reads keep answering
(no lock errors) while the pipeline writes, because the API reads only the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import date

import httpx
import pytest
import websockets

from tests.api.support import ApiEnv, Server
from tests.scans.runs import scan_daily
from trading_pipeline.marketdata import warehouse
from trading_pipeline.settings import get_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SRC = {"source": "sample", "synthetic_symbols": 3}


def test_signals_from_a_dagster_scan_are_pushed_and_rest_never_fails(trading_home):
    from trading_api.keys import create_key
    from trading_pipeline.trading.store import OpsStore

    settings = get_settings()
    scan_daily(SRC, date(2012, 9, 3), date(2013, 2, 26))  # history: a first snapshot exists
    store = OpsStore.from_settings(settings)
    _, key = create_key(store, "e2e")
    env = ApiEnv(home=settings.home, settings=settings, warehouse=settings.warehouse_path,
                 serving_dir=settings.serving_dir, key=key, store_url=settings.ops_store_url)
    server = Server(env)
    received: list[dict] = []
    rest_status: list[int] = []
    ready, stop = threading.Event(), threading.Event()

    async def client() -> None:
        async with websockets.connect(f"{server.ws_url}/ws?api_key={key}") as ws:
            await ws.send(json.dumps({"action": "subscribe", "channels": ["signals"]}))
            async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}) as http:
                ready.set()
                while not stop.is_set():
                    rest_status.append((await http.get("/signals", params={"limit": 50})).status_code)
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                    except TimeoutError:
                        continue
                    if msg.get("type") == "item":
                        received.append(msg)

    t = threading.Thread(target=lambda: asyncio.run(client()), daemon=True)
    t.start()
    try:
        assert ready.wait(30)
        scan_daily(SRC, date(2013, 2, 27), date(2013, 2, 28))  # new bars → dbt → new snapshot
        con = warehouse.connect(settings.warehouse_path, read_only=True)
        try:
            expected = warehouse.fetch_one(
                con, "SELECT count(*) FROM marts.signals WHERE session_date >= '2013-02-27'")[0]
        finally:
            con.close()
        assert expected > 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(
                [m for m in received if str(m["data"].get("session_date", ""))[:10] >= "2013-02-27"]) < expected:
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(10)
        server.stop()
    new = [m for m in received if str(m["data"].get("session_date", ""))[:10] >= "2013-02-27"]
    assert len(new) == expected
    seqs = [m["seq"] for m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert rest_status and set(rest_status) == {200}, f"non-200 answers: {set(rest_status)}"
