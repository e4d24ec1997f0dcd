"""`trading api --workers 2`: several processes on one snapshot, switching together.

Each worker opens the snapshot on its own and keeps its own response cache, so what must
hold is that clients cannot tell which worker answered: the same body and ETag from both,
both switch to a new snapshot after a publish, and /metrics (multiprocess mode, set up by
`trading api` when it forks workers) counts the requests of both.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.api.support import ApiEnv, Server, add_signals
from trading_pipeline.marketdata.warehouse import writer
from trading_pipeline.serving.publish import publish_snapshot

pytestmark = pytest.mark.e2e
URL = "/signals?limit=5"


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _fresh_gets(server: Server, headers: dict, n: int) -> list[httpx.Response]:
    """n requests, each on its own new connection (so the kernel spreads them over workers)."""
    out = []
    for _ in range(n):
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
            out.append(c.get(URL))
    return out


def test_two_workers_answer_alike_and_switch_snapshots_together(api_env: ApiEnv) -> None:
    server = Server(api_env, workers=2)
    try:
        workers = [p for p in _children(server.proc.pid) if Path(f"/proc/{p}/cmdline").exists()]
        assert len(workers) >= 2, workers  # uvicorn's supervisor forked two workers
        first = _fresh_gets(server, api_env.headers(), 40)
        assert {r.status_code for r in first} == {200}
        assert len({r.content for r in first}) == 1 and len({r.headers["etag"] for r in first}) == 1
        total = first[0].json()["total"]

        with writer(api_env.warehouse) as con:
            add_signals(con, [("MSFT", date(2030, 1, 3), "crp_long", 42.0)])
        publish_snapshot(api_env.warehouse, api_env.settings.serving_dir)
        after = _fresh_gets(server, api_env.headers(), 40)  # each worker sees the new file on its next read
        assert {r.json()["total"] for r in after} == {total + 1}
        assert len({r.headers["etag"] for r in after}) == 1 and after[0].headers["etag"] != first[0].headers["etag"]

        deadline = time.monotonic() + 10
        while True:  # the scrape sums the counters every worker wrote
            text = httpx.get(server.url + "/metrics", headers=api_env.headers(), timeout=10).text
            line = next((ln for ln in text.splitlines() if ln.startswith("trading_api_requests_total")
                         and 'route="/signals"' in ln and 'status="200"' in ln), None)
            if line is not None and float(line.rsplit(" ", 1)[1]) == 80.0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert line is not None and float(line.rsplit(" ", 1)[1]) == 80.0, line
        # and both workers took part: each one's own counter file holds /signals requests
        served = {}
        for f in (api_env.home / "prometheus").glob("counter_*.db"):
            n = sum(v for key, v, *_ in MmapedDict.read_all_values_from_file(str(f))
                    if '"/signals"' in key and '"200"' in key)
            served[int(f.stem.split("_")[1])] = n
        assert len([p for p, n in served.items() if n > 0]) == 2, served
        assert sum(served.values()) == 80
    finally:
        server.stop()
