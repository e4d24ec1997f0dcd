"""Reading the serving snapshot: one read-only DuckDB connection per snapshot generation.

The publisher replaces a file by ``os.replace`` for each new snapshot: the pointer
``published.json`` naming a DuckLake snapshot id (the default warehouse; the generation
attaches the lake pinned at it, nothing is copied), or the ``serving.duckdb`` copy of a
DuckDB-file warehouse. Either way a new snapshot is a new inode. Every read checks the
path's inode (one ``stat``); when it changed, the new generation is opened read-only and
becomes current, and the old connection is closed once the last query on it finishes. A
missing or unreadable snapshot raises :class:`SnapshotUnavailable` (the API answers 503 with
the reason) and is retried when the file changes again.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from trading_pipeline import logs
from trading_pipeline.marketdata import extensions
from trading_pipeline.serving.snapshot import (
    META_SQL,
    NoSnapshot,
    attach_published,
    serving_dir_of,
    watched_path,
)
from trading_pipeline.trading.brokers.paper import SqlBarFeed

log = logs.get_logger(__name__)


class SnapshotUnavailable(RuntimeError):
    """No usable serving snapshot right now; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Generation:
    """One opened snapshot file."""

    con: duckdb.DuckDBPyConnection
    inode: tuple[int, int, int]
    meta: dict[str, Any]
    tables: frozenset[str]
    columns: dict[str, tuple[str, ...]]
    alias: str = "snap"  # unique per generation (the response cache's key)
    catalog: str = "snap"  # what a cursor USEs: the alias, or ``lake`` for a pinned lake
    opened_at: float = field(default_factory=time.time)
    refs: int = 0
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sequence(self) -> int:
        return int(self.meta.get("sequence") or 0)

    @property
    def feed_head_seq(self) -> int:
        return int(self.meta.get("feed_head_seq") or 0)

    def has(self, table: str) -> bool:
        return table in self.tables


def _file_id(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


FLOAT_DECIMALS = 6  # prices to a millionth (FX quotes need 5), scores and indicators alike


def clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf floats become None; floats are rounded to six decimals, so a
    stored 784.4329999999993 (binary floating point) is served as 784.433."""
    if isinstance(value, float):
        return round(value, FLOAT_DECIMALS) if math.isfinite(value) else None
    return value


class SnapshotReader:
    """Thread-safe access to the current snapshot at ``path``."""

    def __init__(self, path: Path | str, threads: int = 1, cache_size: int = 2048) -> None:
        self.dir = serving_dir_of(path)  # the serving folder, or a file in it
        self.threads = threads
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self._failed: tuple[tuple[int, int, int] | None, str] | None = None
        self._opened = 0
        self.query_limiter: Any = None  # set by trading_api.routers._query (an anyio limiter)

    @property
    def path(self) -> Path:
        """The file whose inode names the current snapshot (the lake pointer, or the copy)."""
        return watched_path(self.dir)

    # ---- opening / switching ----------------------------------------------------------------
    def _open(self, fid: tuple[int, int, int]) -> Generation:
        # Not duckdb.connect(path): DuckDB caches database instances by path within a
        # process, so after os.replace that would hand back the OLD file. A fresh in-memory
        # instance that ATTACHes what the path names now opens the new generation.
        self._opened += 1
        alias = f"snap{self._opened}"
        con = extensions.connect()
        try:
            catalog = attach_published(con, self.dir, alias)
            con.execute(f"USE {catalog}")
            # Requests are the parallelism (one per threadpool worker); per-query parallelism
            # only adds scheduling overhead to these small reads.
            con.execute(f"SET threads TO {self.threads}")
            rel = con.sql(META_SQL)
            cols = rel.columns
            rows = rel.fetchall()
            if not rows:
                raise SnapshotUnavailable("snapshot has an empty snapshot_meta table")
            meta = dict(zip(cols, rows[0], strict=True))
            tinfo = con.sql(
                "SELECT schema_name || '.' || table_name, list(column_name ORDER BY column_index) "
                "FROM duckdb_columns() WHERE database_name = current_database() GROUP BY ALL"
            ).fetchall()
        except duckdb.CatalogException as exc:
            con.close()
            raise SnapshotUnavailable(f"not a serving snapshot (no snapshot_meta): {exc}") from exc
        except NoSnapshot as exc:
            con.close()
            raise SnapshotUnavailable(str(exc)) from exc
        except BaseException:
            con.close()
            raise
        columns = {name: tuple(c) for name, c in tinfo}
        return Generation(con, fid, meta, frozenset(columns), columns, alias=alias, catalog=catalog)

    def _refresh(self) -> Generation:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._failed = (None, f"no serving snapshot at {self.path}; the pipeline's serving asset publishes it")
            raise SnapshotUnavailable(self._failed[1]) from None
        fid = _file_id(st)
        cur = self._current
        if cur is not None and cur.inode == fid:
            return cur
        if self._failed is not None and self._failed[0] == fid:
            raise SnapshotUnavailable(self._failed[1])
        try:
            gen = self._open(fid)
        except SnapshotUnavailable as exc:
            self._failed = (fid, exc.reason)
            log.warning("snapshot_unusable", path=self.path, reason=exc.reason)
            raise
        except (duckdb.Error, OSError) as exc:
            reason = f"serving snapshot unreadable: {type(exc).__name__}: {exc}".strip()
            self._failed = (fid, reason)
            log.warning("snapshot_unusable", path=self.path, reason=reason)
            raise SnapshotUnavailable(reason) from exc
        self._failed = None
        self._current = gen
        log.info("snapshot_opened", path=self.path, sequence=gen.sequence, feed_head_seq=gen.feed_head_seq)
        if cur is not None:
            self._retire(cur)
        return gen

    def _retire(self, gen: Generation) -> None:
        with gen.lock:
            gen.retired = True
            close = gen.refs == 0
        if close:
            gen.con.close()

    def current(self) -> Generation:
        """The current generation, switching to a new file if one was published."""
        with self._lock:
            return self._refresh()

    @contextmanager
    def cursor(self) -> Iterator[tuple[Generation, duckdb.DuckDBPyConnection]]:
        """A cursor on the current snapshot, valid for the duration of the block."""
        with self._lock:
            gen = self._refresh()
            with gen.lock:
                gen.refs += 1
                cur = gen.con.cursor()  # the connection itself is not thread-safe; a cursor is
        try:
            cur.execute(f"USE {gen.catalog}")  # a cursor starts in the in-memory catalog
            yield gen, cur
        finally:
            cur.close()
            with gen.lock:
                gen.refs -= 1
                close = gen.retired and gen.refs == 0
            if close:
                gen.con.close()

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
                self._current = None

    # ---- queries ------------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        with self.cursor() as (_gen, cur):
            rel = cur.sql(sql, params=params)
            cols = rel.columns
            return [{c: clean(v) for c, v in zip(cols, row, strict=True)} for row in rel.fetchall()]

    def cached(self, key: tuple, compute: Callable[[Generation, duckdb.DuckDBPyConnection], Any]) -> Any:
        """``compute(gen, cursor)`` memoised per snapshot generation.

        A snapshot never changes once published, so a result is valid for as long as its
        generation is current: dashboards polling the same query cost one dict lookup (no
        cursor is opened on a hit). Callers must treat the result as read-only.
        """
        gen = self.current()
        hit = self._get((gen.alias, *key))
        if hit is not None:
            return hit
        with self.cursor() as (gen, cur):
            value = compute(gen, cur)
        self._put(gen.alias, (gen.alias, *key), value)
        return value

    def peek(self, key: tuple) -> Any | None:
        """The cached value for ``key`` in the current generation, without ever blocking.

        For the event loop: returns None (the caller computes in a thread via
        :meth:`cached`) when the key is not cached, the snapshot file changed since it was
        last checked, or another thread holds the reader's lock (e.g. opening a new file).
        """
        if not self._lock.acquire(blocking=False):
            return None
        try:
            try:
                fid = _file_id(os.stat(self.path))
            except OSError:
                return None
            cur = self._current
            if cur is None or cur.inode != fid:
                return None
        finally:
            self._lock.release()
        return self._get((cur.alias, *key))

    def _get(self, full: tuple) -> Any | None:
        with self._cache_lock:
            hit = self._cache.get(full)
            if hit is not None:
                self._cache.move_to_end(full)
            return hit

    def _put(self, alias: str, full: tuple, value: Any) -> None:
        with self._cache_lock:
            if self._cache and next(iter(self._cache))[0] != alias and len(self._cache) > self.cache_size // 2:
                for k in [k for k in self._cache if k[0] != alias]:
                    del self._cache[k]  # drop older generations' entries
            self._cache[full] = value
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def status(self) -> dict[str, Any]:
        """For /health: sequence, age, or the reason there is no snapshot."""
        try:
            gen = self.current()
        except SnapshotUnavailable as exc:
            return {"ok": False, "reason": exc.reason}
        published = gen.meta.get("published_at")
        age = None
        if isinstance(published, datetime):
            age = (datetime.now(UTC).replace(tzinfo=None) - published).total_seconds()
        return {
            "ok": True,
            "sequence": gen.sequence,
            "published_at": published,
            "age_seconds": age,
            "feed_head_seq": gen.feed_head_seq,
            "tables": sorted(gen.tables),
        }

    # ---- feed (WebSocket) -----------------------------------------------------------------------
    def feed_since(self, since: int, limit: int = 100_000) -> tuple[int, int, list[tuple]]:
        """(head_seq, oldest_seq, items with seq > since) from the current snapshot."""
        with self.cursor() as (gen, cur):
            if not gen.has("main.feed"):
                return gen.feed_head_seq, gen.feed_head_seq + 1, []
            rows = cur.sql(
                "SELECT seq, channel, key, payload, published_at FROM feed WHERE seq > ? ORDER BY seq LIMIT ?",
                params=[since, limit],
            ).fetchall()
            oldest = int(gen.meta.get("feed_oldest_seq") or (gen.feed_head_seq + 1))
            return gen.feed_head_seq, oldest, rows


class SnapshotBarFeed(SqlBarFeed):
    """The paper broker's :class:`~trading_pipeline.trading.brokers.paper.BarFeed` over the snapshot.

    The API may not open the warehouse, so manual orders are priced and filled against the
    bars the snapshot carries (the same rows, one publish behind at most), with the same
    queries as the warehouse's feed.
    """

    def __init__(self, reader: SnapshotReader, timeframe: str = "1d") -> None:
        super().__init__(timeframe)
        self.reader = reader

    def _rows(self, sql: str, params: list) -> list[dict[str, Any]]:
        with self.reader.cursor() as (gen, cur):
            if not gen.has(self.table):
                return []
            rel = cur.sql(sql, params=params)
            cols = rel.columns
            return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
