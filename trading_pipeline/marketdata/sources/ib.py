"""Historical bars from Interactive Brokers (TWS / IB Gateway) via ib_async ``reqHistoricalData``.

US stocks on SMART routing, regular trading hours, ``TRADES``. Daily bars come back as the
session date (``ts`` at midnight); intraday bars are requested as epoch seconds
(``formatDate=2``) and stored as naive UTC. Long intraday ranges are split into windows
(IB limits how much small-bar history one request may cover). Pacing: IB allows about 60
historical requests per 10 minutes; ib_async throttles bursts, big backfills still need time.

The connection runs on the same private loop thread as the broker adapter (see
:class:`trading_pipeline.marketdata.sources.ib_session.IBSession`), so ``fetch_bars`` is a plain synchronous call.
Its client id defaults to the broker's + 1: TWS allows one connection per client id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from math import ceil
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from ib_async import IB, Stock
from ib_async.wrapper import RequestError

from trading_pipeline.marketdata.bars import SOURCE_SCHEMA, empty_bars, is_intraday, naive_utc
from trading_pipeline.marketdata.sources.base import SourceError
from trading_pipeline.marketdata.sources.ib_session import IBSession, IBUnavailable

BAR_SIZES = {
    "1m": "1 min",
    "5m": "5 mins",
    "15m": "15 mins",
    "30m": "30 mins",
    "1h": "1 hour",
    "1d": "1 day",
}
# calendar days of history per request, per timeframe
WINDOW_DAYS = {"1m": 7, "5m": 30, "15m": 30, "30m": 30, "1h": 30}
NO_DATA = 162  # "HMDS query returned no data"
NO_CONTRACT = 200
SESSION_TZ = ZoneInfo("America/New_York")


class IBBarSource:
    """``BarSource`` over TWS / IB Gateway; ``universe`` is what ``symbols=None`` fetches."""

    name = "ib"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        client_id: int = 18,
        *,
        universe: Sequence[str] = (),
        timeout: float = 10.0,
        request_timeout: float = 60.0,
        shared: bool = True,
    ) -> None:
        make = IBSession.shared if shared else IBSession
        self.session = make(host, port, client_id, readonly=True, timeout=timeout)
        self.universe = tuple(universe)
        self.request_timeout = request_timeout

    @classmethod
    def from_settings(cls, settings: Any, universe: Sequence[str] = ()) -> IBBarSource:
        s = settings
        return cls(s.ib_host, s.ib_port, s.ib_client_id + 1, universe=universe)

    def close(self) -> None:
        self.session.close()

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        try:
            intraday = is_intraday(timeframe)
        except ValueError as e:
            raise SourceError(str(e)) from e
        if end < start:
            raise SourceError(f"end {end} is before start {start}")
        wanted = list(symbols) if symbols is not None else list(self.universe)
        if symbols is None and not wanted:
            raise SourceError("the IB source has no symbol universe: pass symbols explicitly")
        frames = [self._fetch_symbol(s, start, end, timeframe, intraday) for s in wanted]
        frames = [f for f in frames if not f.is_empty()]
        if not frames:
            return empty_bars()
        return pl.concat(frames).unique(subset=["symbol", "ts"], keep="last").sort("symbol", "ts")

    def _windows(self, start: date, end: date, timeframe: str) -> list[tuple[date, date]]:
        step = WINDOW_DAYS.get(timeframe)
        if step is None:
            return [(start, end)]
        out, lo = [], start
        while lo <= end:
            hi = min(lo + timedelta(days=step - 1), end)
            out.append((lo, hi))
            lo = hi + timedelta(days=1)
        return out

    def _fetch_symbol(
        self, symbol: str, start: date, end: date, timeframe: str, intraday: bool
    ) -> pl.DataFrame:
        rows: list[tuple] = []
        for lo, hi in self._windows(start, end, timeframe):
            for bar in self._request(symbol, lo, hi, timeframe):
                if intraday:
                    ts = naive_utc(bar.date)
                    session = bar.date.astimezone(SESSION_TZ).date()
                else:
                    session = bar.date if isinstance(bar.date, date) else bar.date.date()
                    ts = datetime.combine(session, time())
                if lo <= session <= hi:
                    rows.append(
                        (
                            symbol,
                            timeframe,
                            ts,
                            bar.open,
                            bar.high,
                            bar.low,
                            bar.close,
                            float(bar.volume),
                        )
                    )
        return pl.DataFrame(rows, schema=SOURCE_SCHEMA, orient="row")

    def _request(self, symbol: str, lo: date, hi: date, timeframe: str) -> list[Any]:
        # end: midnight UTC after ``hi`` (after the US close); clamp to now ("" = now for IB)
        end_dt = datetime.combine(hi + timedelta(days=1), time(), UTC)
        now = datetime.now(UTC)
        end_arg: datetime | str = end_dt
        if end_dt > now:
            end_dt, end_arg = now, ""
        days = max(1, ceil((end_dt - datetime.combine(lo, time(), UTC)).total_seconds() / 86400))
        duration = f"{days} D" if days <= 365 else f"{ceil(days / 365)} Y"

        async def fetch(ib: IB) -> list[Any]:
            return list(
                await asyncio.wait_for(
                    ib.reqHistoricalDataAsync(
                        Stock(symbol, "SMART", "USD"),
                        endDateTime=end_arg,
                        durationStr=duration,
                        barSizeSetting=BAR_SIZES[timeframe],
                        whatToShow="TRADES",
                        useRTH=True,
                        formatDate=2,
                        timeout=0,
                    ),
                    self.request_timeout,
                )
            )

        try:
            try:
                return self.session.run(fetch, self.request_timeout)
            except IBUnavailable as e:
                if not e.dropped:
                    raise
                return self.session.run(fetch, self.request_timeout)  # reconnect once after a drop
        except IBUnavailable as e:
            raise SourceError(f"IB historical data for {symbol}: {e}") from e
        except RequestError as e:
            if e.code == NO_DATA:
                return []
            if e.code == NO_CONTRACT:
                raise SourceError(
                    f"IB does not know the US stock {symbol!r} (error {e.code}: {e.message})"
                ) from e
            raise SourceError(
                f"IB refused historical data for {symbol} (error {e.code}: {e.message})"
            ) from e
