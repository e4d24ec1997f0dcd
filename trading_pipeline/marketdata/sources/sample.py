"""The bundled sample market: real bars plus deterministic synthetic symbols.

Real: GOOG daily bars 2004-08-19..2013-03-01 and EURUSD hourly bars 2017-04-19..2018-02-07,
converted from the fixtures the `backtesting` wheel ships (see scripts/build_sample_data.py).
Synthetic: ``SYN0000``.. daily bars over the same dates as GOOG, and 1-minute bars for the
first five of them over the last two weeks of the sample, so that the daily scans have a
universe and the intraday scans have minute bars to work on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import polars as pl

from trading_pipeline.marketdata.bars import SOURCE_SCHEMA, empty_bars
from trading_pipeline.marketdata.calendars import DEFAULT_CALENDAR
from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource, synthetic_symbols
from trading_pipeline.settings import SAMPLE_DATA_DIR

DAILY_START, DAILY_END = date(2004, 8, 19), date(2013, 3, 1)
INTRADAY_START, INTRADAY_END = date(2013, 2, 19), date(2013, 3, 1)
INTRADAY_SYMBOLS = 5

REAL = {
    # symbol: (file, timeframe, exchange, name)
    "GOOG": ("GOOG_1d.parquet", "1d", "XNAS", "Google Inc. (real daily bars)"),
    "EURUSD": ("EURUSD_1h.parquet", "1h", "FX", "Euro / US dollar (real hourly bars)"),
}


@lru_cache(maxsize=4)
def _real(file: str) -> pl.DataFrame:
    return pl.read_parquet(SAMPLE_DATA_DIR / file).cast(SOURCE_SCHEMA).select(list(SOURCE_SCHEMA))


class SampleBarSource:
    name = "sample"

    def __init__(self, synthetic: int = 20) -> None:
        self.synthetic = SyntheticBarSource(synthetic_symbols(synthetic))

    @property
    def symbols(self) -> list[str]:
        return [*REAL, *self.synthetic.symbols]

    def exchange_for(self, symbol: str) -> str:
        return REAL[symbol][2] if symbol in REAL else DEFAULT_CALENDAR

    def name_of(self, symbol: str) -> str | None:
        return REAL[symbol][3] if symbol in REAL else f"Synthetic {symbol}"

    def timeframes(self) -> list[str]:
        return ["1d", "1h", "1m"]

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        wanted = set(symbols) if symbols is not None else set(self.symbols)
        frames = [
            _real(file).filter(pl.col("ts").dt.date().is_between(start, end))
            for sym, (file, tf, _, _) in REAL.items()
            if sym in wanted and tf == timeframe
        ]
        syn = [s for s in self.synthetic.symbols if s in wanted]
        if timeframe == "1d":
            lo, hi = max(start, DAILY_START), min(end, DAILY_END)
            if syn and lo <= hi:
                frames.append(self.synthetic.fetch_bars(syn, lo, hi, "1d"))
        elif timeframe == "1m":
            lo, hi = max(start, INTRADAY_START), min(end, INTRADAY_END)
            syn = [s for s in syn if s in self.synthetic.symbols[:INTRADAY_SYMBOLS]]
            if syn and lo <= hi:
                frames.append(self.synthetic.fetch_bars(syn, lo, hi, "1m"))
        frames = [f for f in frames if f.height]
        return pl.concat(frames).sort("symbol", "ts") if frames else empty_bars()
