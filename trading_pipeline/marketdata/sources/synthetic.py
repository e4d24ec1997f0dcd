"""Deterministic synthetic bars for any number of symbols and years.

A symbol's path depends only on its name (a stable CRC32 seed), never on the range asked
for, so loading 2020 then 2021 gives exactly the bars that loading 2020-2021 at once gives.
Daily bars walk a geometric Brownian motion over the exchange's sessions; intraday bars
are a random walk inside each session from that session's daily open.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import polars as pl

from trading_pipeline.marketdata import calendars
from trading_pipeline.marketdata.bars import SOURCE_SCHEMA, TIMEFRAMES, empty_bars
from trading_pipeline.marketdata.calendars import DEFAULT_CALENDAR

EPOCH = date(2000, 1, 3)


def synthetic_symbols(n: int, prefix: str = "SYN") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _stream(symbol: str, name: str) -> np.random.Generator:
    """One random stream per (symbol, array): draws are prefix-stable, so bar i never
    depends on how many sessions were asked for."""
    return np.random.default_rng([_seed(symbol, "daily"), _seed(name)])


def _daily_arrays(symbol: str, n: int) -> dict[str, np.ndarray]:
    p = _stream(symbol, "params")
    start_price = p.uniform(30.0, 400.0)
    drift = p.normal(0.0001, 0.0002)
    vol = p.uniform(0.01, 0.03)
    base_volume = p.uniform(2e5, 3e6)
    rets = _stream(symbol, "returns").normal(drift, vol, n)
    # occasional momentum bursts so breakouts happen on a realistic scale
    bursts = _stream(symbol, "bursts").random(n) < 0.02
    rets = rets + np.where(bursts, _stream(symbol, "burst_size").normal(0.0, 3 * vol, n), 0.0)
    close = start_price * np.exp(np.cumsum(rets))
    gap = _stream(symbol, "gap").normal(0.0, vol / 3, n)
    open_ = np.empty(n)
    open_[0] = start_price
    open_[1:] = close[:-1] * np.exp(gap[1:])
    wick_hi = np.abs(_stream(symbol, "wick_hi").normal(0.0, vol / 2, n))
    wick_lo = np.abs(_stream(symbol, "wick_lo").normal(0.0, vol / 2, n))
    high = np.maximum(open_, close) * (1 + wick_hi)
    low = np.minimum(open_, close) * (1 - wick_lo)
    volume = np.round(base_volume * _stream(symbol, "volume").lognormal(0.0, 0.35, n) * (1 + 2 * bursts))
    return {
        "open": np.round(open_, 2),
        "high": np.round(high, 2),
        "low": np.round(low, 2),
        "close": np.round(close, 2),
        "volume": volume,
    }


class SyntheticBarSource:
    """Synthetic bars on an exchange calendar (default XNYS)."""

    name = "synthetic"

    def __init__(self, symbols: Sequence[str] | int = 20, calendar: str = DEFAULT_CALENDAR) -> None:
        self.symbols = synthetic_symbols(symbols) if isinstance(symbols, int) else list(symbols)
        self.calendar = calendar

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {timeframe!r}")
        symbols = list(symbols) if symbols is not None else self.symbols
        all_sessions = calendars.sessions(self.calendar, EPOCH, end)
        if all_sessions.is_empty() or not symbols:
            return empty_bars()
        dates = all_sessions["session_date"].to_numpy()
        keep = dates >= np.datetime64(start)
        if timeframe == "1d":
            return self._daily(symbols, dates, keep)
        return self._intraday(symbols, all_sessions, keep, timeframe)

    def _daily(self, symbols: list[str], dates: np.ndarray, keep: np.ndarray) -> pl.DataFrame:
        ts = dates[keep].astype("datetime64[us]")
        frames = []
        for sym in symbols:
            arrs = _daily_arrays(sym, len(dates))
            frames.append(
                pl.DataFrame(
                    {"symbol": sym, "timeframe": "1d", "ts": ts, **{k: v[keep] for k, v in arrs.items()}}
                )
            )
        return pl.concat(frames).cast(SOURCE_SCHEMA).select(list(SOURCE_SCHEMA))

    def _intraday(
        self, symbols: list[str], all_sessions: pl.DataFrame, keep: np.ndarray, timeframe: str
    ) -> pl.DataFrame:
        minutes = TIMEFRAMES[timeframe]
        sess = all_sessions.filter(pl.Series(keep))
        step = np.timedelta64(minutes, "m")
        frames = []
        for sym in symbols:
            daily = _daily_arrays(sym, len(keep))
            opens = daily["open"][keep]
            vol_base = daily["volume"][keep]
            for i, (d, o_utc, c_utc) in enumerate(sess.iter_rows()):
                n = int((c_utc - o_utc) / timedelta(minutes=minutes))
                if n <= 0:
                    continue
                rng = np.random.default_rng(_seed(sym, d, timeframe))
                sigma = 0.0008 * np.sqrt(minutes)
                close = opens[i] * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
                open_ = np.concatenate([[opens[i]], close[:-1]])
                high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 2, n)))
                low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 2, n)))
                volume = np.round(vol_base[i] / n * rng.lognormal(0.0, 0.5, n))
                ts = np.datetime64(o_utc, "us") + np.arange(n) * step
                frames.append(
                    pl.DataFrame(
                        {
                            "symbol": sym,
                            "timeframe": timeframe,
                            "ts": ts,
                            "open": np.round(open_, 2),
                            "high": np.round(high, 2),
                            "low": np.round(low, 2),
                            "close": np.round(close, 2),
                            "volume": volume,
                        }
                    )
                )
        if not frames:
            return empty_bars()
        return pl.concat(frames).cast(SOURCE_SCHEMA).select(list(SOURCE_SCHEMA))
