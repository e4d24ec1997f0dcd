"""The snapshot reader: 503 with a reason when the snapshot is missing or corrupt, then recovery."""

from __future__ import annotations

import os
import threading

from fastapi.testclient import TestClient

from tests.api.support import ApiEnv
from trading_api.snapshot import SnapshotReader


def test_missing_snapshot_is_503_then_recovers(client: TestClient, api_env: ApiEnv) -> None:
    os.unlink(api_env.snapshot)
    r = client.get("/signals")
    assert r.status_code == 503
    assert "no serving snapshot" in r.json()["detail"]
    assert r.headers["retry-after"] == "1"
    h = client.get("/health")
    assert h.status_code == 503 and h.json()["status"] == "degraded" and h.json()["snapshot"]["ok"] is False
    api_env.publish()
    r = client.get("/signals")
    assert r.status_code == 200 and r.json()["total"] == 4
    assert client.get("/health").json()["snapshot"]["sequence"] == 2  # the sequence survived the loss


def test_corrupt_snapshot_is_503_then_recovers(client: TestClient, api_env: ApiEnv) -> None:
    tmp = api_env.serving_dir / "garbage.tmp"
    tmp.write_bytes(b"this is not a duckdb file" * 1000)
    os.replace(tmp, api_env.snapshot)
    r = client.get("/market-data/GOOG")
    assert r.status_code == 503 and "unreadable" in r.json()["detail"]
    assert client.get("/signals").status_code == 503  # remembered, not re-opened each time
    api_env.publish()  # the publisher copes with an unreadable previous snapshot
    assert client.get("/market-data/GOOG").status_code == 200


def test_a_lake_snapshot_without_meta_is_not_a_snapshot(client: TestClient, api_env: ApiEnv) -> None:
    """A pointer naming a lake snapshot from before any publish (no snapshot_meta in it)."""
    import json

    other = api_env.serving_dir / "other.tmp"
    other.write_text(json.dumps({"warehouse": str(api_env.warehouse), "snapshot_id": 1, "sequence": 99}))
    os.replace(other, api_env.snapshot)
    r = client.get("/signals")
    assert r.status_code == 503 and "not a serving snapshot" in r.json()["detail"]
    api_env.publish()
    assert client.get("/signals").status_code == 200


def test_reader_switches_generations_under_concurrent_reads(api_env: ApiEnv) -> None:
    reader = SnapshotReader(api_env.snapshot)
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                rows = reader.query("SELECT count(*) AS n FROM raw.bars_daily")
                assert rows[0]["n"] == 120
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    seqs = []
    for _ in range(5):
        api_env.publish()
        seqs.append(reader.current().sequence)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert seqs == [2, 3, 4, 5, 6]
    reader.close()


def test_old_generations_are_closed(api_env: ApiEnv) -> None:
    """Replaced snapshot files are unlinked; the reader must not keep them open forever."""
    reader = SnapshotReader(api_env.snapshot)
    reader.query("SELECT 1")
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        api_env.publish()
        reader.query("SELECT count(*) FROM marts.signals")
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the fd of listdir itself, already closed
            pass
    assert not [p for p in targets if p.endswith("(deleted)") and "serving" in p]
    reader.close()
