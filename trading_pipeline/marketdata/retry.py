"""Waiting for another process's DuckDB file lock: the one retry loop every warehouse writer uses.

DuckDB lets one process at a time hold a database file (even a reader blocks a writer) and
fails at once instead of waiting. A writer retries while :func:`is_lock_error` says the error
is that lock, with exponential backoff and jitter (so waiters do not retry in step), until a
deadline: ``TRADING_LOCK_WAIT_SECONDS`` (``Settings.lock_wait_seconds``) from the first attempt.
Any other error is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_lock_error(exc: BaseException | str) -> bool:
    """DuckDB's error when another process holds the file (``Could not set lock on file``)."""
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text


def is_commit_conflict(exc: BaseException | str) -> bool:
    """DuckLake's refusal to commit a transaction that conflicts with one another writer
    committed since it began (both deleted from the same table, both created the same
    name...), or its own commit retries running out: the transaction was rolled back and can
    be run again from the start, on the new snapshot."""
    text = str(exc)
    return "Transaction conflict - " in text or "Exceeded the maximum retry count" in text


def lock_wait() -> float:
    """Seconds a writer waits for another process's lock (``TRADING_LOCK_WAIT_SECONDS``)."""
    from trading_pipeline.settings import get_settings

    return get_settings().lock_wait_seconds


class LockWait:
    """One wait for a lock: ``wait`` seconds from now (default :func:`lock_wait`), or until
    ``deadline`` (a ``time.monotonic()`` value). ``retry(exc)`` is the whole loop body::

        waiting = LockWait()
        while True:
            try:
                return open_it()
            except duckdb.Error as exc:
                if not waiting.retry(exc):
                    raise
    """

    def __init__(self, wait: float | None = None, *, deadline: float | None = None,
                 first_delay: float = 0.05, max_delay: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 retryable: Callable[[BaseException | str], bool] = is_lock_error) -> None:
        self.clock, self.sleep, self.retryable = clock, sleep, retryable
        self.deadline = deadline if deadline is not None else clock() + (lock_wait() if wait is None else wait)
        self.delay, self.max_delay = first_delay, max_delay
        self.attempts = 1

    def retry(self, exc: BaseException | str) -> bool:
        """After a failed attempt: ``False`` (raise it) unless ``retryable(exc)`` (by default: a
        lock error; a lake writer passes :func:`is_commit_conflict`) and the deadline has not
        passed; else sleep (backoff with jitter, never past the deadline) and return ``True``
        (try again)."""
        left = self.deadline - self.clock()
        if not self.retryable(exc) or left <= 0:
            return False
        self.sleep(min(left, self.delay * random.uniform(0.5, 1.0)))
        self.delay = min(self.delay * 2, self.max_delay)
        self.attempts += 1
        return True


def call_waiting_for_lock(fn: Callable[[], T], wait: float | None = None, **kwargs) -> T:
    """``fn()``, called again while it raises a lock error, up to the deadline (see LockWait)."""
    waiting = LockWait(wait, **kwargs)
    while True:
        try:
            return fn()
        except Exception as exc:
            if not waiting.retry(exc):
                raise
