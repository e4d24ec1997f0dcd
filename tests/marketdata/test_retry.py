"""The one lock-retry loop (marketdata/retry.py): retries DuckDB's lock error until the
deadline, with growing jittered sleeps, and re-raises anything else at once."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pytest

from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.retry import LockWait, call_waiting_for_lock, is_lock_error
from trading_pipeline.settings import get_settings

LOCK_MESSAGE = 'IO Error: Could not set lock on file "w.duckdb": Conflicting lock is held in python (PID 1)'


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_lock_error_is_retried_until_the_deadline_then_raised():
    t = FakeTime()
    calls = []

    def locked():
        calls.append(t.now)
        raise duckdb.IOException(LOCK_MESSAGE)

    with pytest.raises(duckdb.IOException, match="Could not set lock"):
        call_waiting_for_lock(locked, 5.0, clock=t.clock, sleep=t.sleep)
    assert calls[-1] == pytest.approx(1005.0)  # a last try at the deadline, none after it
    assert sum(t.sleeps) == pytest.approx(5.0)
    assert len(calls) == len(t.sleeps) + 1 > 5
    # backoff: each sleep is the current delay times a jitter in [0.5, 1], the delay doubling
    # from 0.05 s up to 1 s (the last one is cut to the time left)
    delay = 0.05
    for s in t.sleeps[:-1]:
        assert delay * 0.5 <= s <= delay
        delay = min(delay * 2, 1.0)
    assert max(t.sleeps) <= 1.0 and max(t.sleeps) > 0.5
    assert len(set(t.sleeps[:-1])) > 1


def test_other_errors_are_raised_at_once():
    t = FakeTime()
    calls = []

    def broken():
        calls.append(1)
        raise duckdb.IOException("IO Error: Cannot open file: permission denied")

    with pytest.raises(duckdb.IOException, match="permission denied"):
        call_waiting_for_lock(broken, 60.0, clock=t.clock, sleep=t.sleep)
    assert calls == [1] and t.sleeps == []
    with pytest.raises(ValueError):
        call_waiting_for_lock(lambda: (_ for _ in ()).throw(ValueError("no")), 60.0,
                              clock=t.clock, sleep=t.sleep)


def test_returns_once_the_lock_is_gone():
    t = FakeTime()
    attempts = iter([duckdb.IOException(LOCK_MESSAGE), duckdb.IOException(LOCK_MESSAGE), "opened"])

    def flaky():
        got = next(attempts)
        if isinstance(got, Exception):
            raise got
        return got

    assert call_waiting_for_lock(flaky, 5.0, clock=t.clock, sleep=t.sleep) == "opened"
    assert len(t.sleeps) == 2


def test_the_default_deadline_is_the_lock_wait_setting(trading_home, monkeypatch):
    monkeypatch.setenv("TRADING_LOCK_WAIT_SECONDS", "7.5")
    get_settings.cache_clear()
    t = FakeTime()
    assert LockWait(clock=t.clock, sleep=t.sleep).deadline == pytest.approx(1007.5)
    assert LockWait(0, clock=t.clock).retry(LOCK_MESSAGE) is False  # no wait: raise at once
    assert is_lock_error(LOCK_MESSAGE) and not is_lock_error("Catalog Error: no table")


def test_connect_waits_for_another_process_to_release_the_file(tmp_path):
    """The real lock: a second process holds the file; ``connect`` fails with DuckDB's lock
    error when it may not wait, and opens the file once the holder lets go when it may."""
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(2.0); c.close()", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException) as err:
            wh.connect(path, retries=0.3)
        assert is_lock_error(err.value)
        start = time.monotonic()
        con = wh.connect(path, retries=30)
        waited = time.monotonic() - start
        con.close()
        assert 0.5 < waited < 10  # it waited for the holder (about 1.7 s), not the full 30 s
    finally:
        holder.kill()
        holder.wait()
