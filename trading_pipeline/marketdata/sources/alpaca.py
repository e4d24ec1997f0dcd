"""Alpaca historical stock bars as a :class:`~trading_pipeline.marketdata.sources.base.BarSource`.

Uses alpaca-py's ``StockHistoricalDataClient.get_stock_bars`` (which follows
``next_page_token`` itself) and turns the result into the canonical bar frame:

- intraday ``ts`` is the bar start as naive UTC;
- daily bars are stamped by Alpaca at the session's local midnight (04:00 or 05:00 UTC);
  we take the nearest New York midnight's date, which also stays right if a feed stamps
  daily bars at 00:00 UTC, and store that date at midnight;
- the requested range is session dates in New York, so the query covers New York midnight
  of ``start`` to the end of ``end`` and rows are filtered on the New York date.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import polars as pl
import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from trading_pipeline.marketdata.bars import SOURCE_SCHEMA, TIMEFRAMES, empty_bars, naive_utc
from trading_pipeline.marketdata.sources.base import SourceError

if TYPE_CHECKING:
    from trading_pipeline.settings import Settings

NEW_YORK = ZoneInfo("America/New_York")
ALPACA_TIMEFRAMES: dict[str, TimeFrame] = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "30m": TimeFrame(30, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}
KEYS_HINT = "check TRADING_ALPACA_API_KEY / TRADING_ALPACA_SECRET_KEY (market-data keys)"
URL_HINT = "check the network or TRADING_ALPACA_DATA_URL_OVERRIDE"


def _ny_midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)


class AlpacaBarSource:
    """Bars from Alpaca's market-data API.

    ``symbols`` is the universe used when ``fetch_bars`` gets ``symbols=None`` (Alpaca has no
    useful universe of its own); ``feed`` ("iex" for free accounts, "sip" for paid) and
    ``adjustment`` ("raw", "split", "dividend", "all") pass straight to Alpaca.
    """

    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        url_override: str | None = None,
        symbols: Sequence[str] | None = None,
        feed: str | None = None,
        adjustment: str | None = "all",
    ) -> None:
        if not api_key or not secret_key:
            raise SourceError(f"Alpaca bar source needs API keys: {KEYS_HINT}")
        self._client = StockHistoricalDataClient(api_key, secret_key, url_override=url_override)
        self._url = url_override or "data.alpaca.markets"
        self._symbols = list(symbols) if symbols else None
        self._feed = DataFeed(feed) if feed else None
        self._adjustment = Adjustment(adjustment) if adjustment else None

    @classmethod
    def from_settings(
        cls, settings: Settings, symbols: Sequence[str] | None = None
    ) -> AlpacaBarSource:
        """Build from ``TRADING_ALPACA_API_KEY/SECRET_KEY/DATA_URL_OVERRIDE``."""
        s = settings
        return cls(
            s.alpaca_api_key or "",
            s.alpaca_secret_key or "",
            url_override=s.alpaca_data_url_override,
            symbols=symbols,
        )

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        """Bars with ``start <= session date (New York) <= end``, canonical and sorted."""
        if timeframe not in TIMEFRAMES:
            raise SourceError(
                f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAMES)}"
            )
        wanted = list(symbols) if symbols is not None else self._symbols
        if not wanted:
            raise SourceError(
                "Alpaca needs explicit symbols (pass symbols= or configure a universe)"
            )
        if end < start:
            return empty_bars()
        # daily stamps sit at some midnight near the session: ask a day wider, filter after
        pad = timedelta(days=1) if timeframe == "1d" else timedelta(0)
        request = StockBarsRequest(
            symbol_or_symbols=sorted(set(wanted)),
            timeframe=ALPACA_TIMEFRAMES[timeframe],
            start=_ny_midnight_utc(start) - pad,
            end=_ny_midnight_utc(end + timedelta(days=1)) - timedelta(microseconds=1) + pad,
            feed=self._feed,
            adjustment=self._adjustment,
        )
        raw = self._get(request)
        return self._frame(raw, timeframe, start, end)

    def _get(self, request: StockBarsRequest) -> dict[str, list[Any]]:
        try:
            barset = self._client.get_stock_bars(request)
            return {sym: list(bars) for sym, bars in (barset.data or {}).items()}  # type: ignore[union-attr]
        except APIError as exc:
            code = exc.status_code
            hint = (
                KEYS_HINT
                if code in (401, 403)
                else URL_HINT
                if code is None or code >= 500
                else "check the request"
            )
            raise SourceError(
                f"Alpaca bars request failed: HTTP {code}: {str(exc)[:300]}; {hint}"
            ) from exc
        except (
            requests.exceptions.JSONDecodeError,
            pydantic.ValidationError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:
            raise SourceError(
                f"Alpaca sent a malformed bars payload from {self._url} ({type(exc).__name__}: {str(exc)[:200]}); {URL_HINT}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise SourceError(
                f"cannot reach Alpaca market data at {self._url} ({type(exc).__name__}); {URL_HINT}"
            ) from exc

    @staticmethod
    def _frame(raw: dict[str, list[Any]], timeframe: str, start: date, end: date) -> pl.DataFrame:
        rows: dict[str, list[Any]] = {k: [] for k in SOURCE_SCHEMA}
        for symbol, bars in raw.items():
            for bar in bars:
                ts = bar.timestamp
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=UTC)
                local = ts.astimezone(NEW_YORK)
                if timeframe == "1d":
                    session = (local + timedelta(hours=12)).date()  # nearest New York midnight
                    out_ts = datetime.combine(session, time(0))
                else:
                    session = local.date()
                    out_ts = naive_utc(ts)
                if not start <= session <= end:
                    continue
                rows["symbol"].append(symbol)
                rows["timeframe"].append(timeframe)
                rows["ts"].append(out_ts)
                rows["open"].append(bar.open)
                rows["high"].append(bar.high)
                rows["low"].append(bar.low)
                rows["close"].append(bar.close)
                rows["volume"].append(bar.volume)
        frame = pl.DataFrame(rows, schema=SOURCE_SCHEMA)
        return frame.unique(
            subset=["symbol", "timeframe", "ts"], keep="last", maintain_order=True
        ).sort("symbol", "ts")
