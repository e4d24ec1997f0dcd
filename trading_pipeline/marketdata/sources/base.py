"""The market-data source protocol.

Every source returns bars in the canonical shape of :data:`trading_pipeline.marketdata.bars.SOURCE_SCHEMA`
(``symbol, timeframe, ts, open, high, low, close, volume``; ``ts`` naive UTC bar start; daily
bars at midnight of the session date), sorted by symbol then ts. Validation, session dates and
the warehouse upsert happen downstream, identically for every source.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol, runtime_checkable

import polars as pl


class SourceError(RuntimeError):
    """A source could not deliver bars (bad credentials, unreachable, bad payload)."""


@runtime_checkable
class BarSource(Protocol):
    name: str

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        """Bars with ``start <= session date <= end``; ``symbols=None`` means the source's universe."""
        ...
