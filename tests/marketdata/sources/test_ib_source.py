"""IBBarSource through the real ib_async client against the fake TWS (tests/stubs/fake_tws.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date, datetime

import polars as pl
import pytest

from tests.stubs.fake_tws import FakeTWS, daily_bars, fake_tws, intraday_bars
from trading_pipeline.marketdata.bars import SOURCE_SCHEMA
from trading_pipeline.marketdata.sources.base import BarSource, SourceError
from trading_pipeline.marketdata.sources.ib import IBBarSource
from trading_pipeline.settings import Settings

pytestmark = pytest.mark.timeout(60)

DAILY = pl.concat(
    [daily_bars("AAA", date(2024, 1, 2), 40), daily_bars("BBB", date(2024, 1, 2), 40, base=20.0)]
)
# two New York sessions, 5-minute bars: one in winter (UTC-5) and one in summer (UTC-4)
INTRADAY = pl.concat(
    [
        intraday_bars("AAA", date(2024, 3, 8), 5, 78),
        intraday_bars("AAA", date(2024, 3, 11), 5, 78),
        intraday_bars("BBB", date(2024, 3, 8), 5, 3),
    ]
)


@pytest.fixture(scope="module")
def tws() -> Iterator[FakeTWS]:
    with fake_tws(pl.concat([DAILY, INTRADAY]), known_symbols=("EMPTY",)) as server:
        yield server
        assert server.unhandled == []


@pytest.fixture(scope="module")
def source(tws: FakeTWS) -> Iterator[IBBarSource]:
    src = IBBarSource(
        tws.host, tws.port, client_id=18, timeout=5, request_timeout=10, universe=("BBB",)
    )
    yield src
    src.close()


def expected(
    frame: pl.DataFrame, symbols: list[str], start: datetime, end: datetime
) -> pl.DataFrame:
    return frame.filter(pl.col("symbol").is_in(symbols) & pl.col("ts").is_between(start, end)).sort(
        "symbol", "ts"
    )


def test_is_a_bar_source(source: IBBarSource) -> None:
    assert isinstance(source, BarSource)


def test_daily_round_trip(source: IBBarSource, tws: FakeTWS) -> None:
    got = source.fetch_bars(["BBB", "AAA"], date(2024, 1, 6), date(2024, 1, 31), "1d")
    assert got.schema == pl.Schema(SOURCE_SCHEMA)
    want = expected(DAILY, ["AAA", "BBB"], datetime(2024, 1, 6), datetime(2024, 1, 31))
    assert got.equals(want)
    assert got["ts"].min() == datetime(2024, 1, 8)  # Monday; ts = session date at midnight
    req = tws.history_requests[-1]
    assert (req["bar_size"], req["what"], req["use_rth"], req["format_date"]) == (
        "1 day",
        "TRADES",
        True,
        2,
    )
    assert req["end"] == "20240201 00:00:00 UTC"


def test_intraday_round_trip_naive_utc(source: IBBarSource) -> None:
    got = source.fetch_bars(["AAA"], date(2024, 3, 8), date(2024, 3, 11), "5m")
    assert got.schema == pl.Schema(SOURCE_SCHEMA)
    assert got.height == 156
    assert got.equals(expected(INTRADAY, ["AAA"], datetime(2024, 3, 8), datetime(2024, 3, 12)))
    # 09:30 New York is 14:30 UTC before the DST switch and 13:30 UTC after it
    firsts = (
        got.group_by(pl.col("ts").dt.date().alias("day"))
        .agg(pl.col("ts").min())
        .sort("day")["ts"]
        .to_list()
    )
    assert firsts == [datetime(2024, 3, 8, 14, 30), datetime(2024, 3, 11, 13, 30)]


def test_intraday_range_is_split_into_windows(source: IBBarSource, tws: FakeTWS) -> None:
    before = len(tws.history_requests)
    got = source.fetch_bars(["AAA"], date(2024, 1, 1), date(2024, 3, 31), "5m")
    assert got.height == 156
    assert len(tws.history_requests) - before == 4  # 91 days in 30-day windows
    assert got["ts"].is_sorted() and got["ts"].n_unique() == got.height


def test_one_session_only(source: IBBarSource) -> None:
    got = source.fetch_bars(["AAA"], date(2024, 3, 11), date(2024, 3, 11), "5m")
    assert got.height == 78 and got["ts"].dt.date().unique().to_list() == [date(2024, 3, 11)]


def test_empty_result(source: IBBarSource) -> None:
    got = source.fetch_bars(["EMPTY"], date(2024, 1, 1), date(2024, 1, 31), "1d")
    assert got.is_empty() and got.schema == pl.Schema(SOURCE_SCHEMA)
    got = source.fetch_bars(["AAA"], date(2023, 1, 1), date(2023, 1, 31), "1d")
    assert got.is_empty()


def test_universe_when_symbols_none(source: IBBarSource) -> None:
    got = source.fetch_bars(None, date(2024, 3, 8), date(2024, 3, 8), "5m")
    assert got["symbol"].unique().to_list() == ["BBB"] and got.height == 3


def test_unknown_symbol_and_bad_timeframe(source: IBBarSource) -> None:
    with pytest.raises(SourceError, match="ZZZZ"):
        source.fetch_bars(["ZZZZ"], date(2024, 1, 1), date(2024, 1, 31), "1d")
    with pytest.raises(SourceError, match="timeframe"):
        source.fetch_bars(["AAA"], date(2024, 1, 1), date(2024, 1, 31), "2m")


def test_no_universe_needs_symbols(tws: FakeTWS) -> None:
    src = IBBarSource(tws.host, tws.port, client_id=19)
    with pytest.raises(SourceError, match="symbol"):
        src.fetch_bars(None, date(2024, 1, 1), date(2024, 1, 31), "1d")


def test_reconnects_after_drop(source: IBBarSource, tws: FakeTWS) -> None:
    source.fetch_bars(["AAA"], date(2024, 1, 2), date(2024, 1, 5), "1d")
    tws.drop_connections()
    got = source.fetch_bars(["AAA"], date(2024, 1, 2), date(2024, 1, 5), "1d")
    assert got.height == 4


def test_connection_refused_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(ib_host="127.0.0.1", ib_port=port, ib_client_id=30)
    src = IBBarSource.from_settings(settings)
    try:
        with pytest.raises(SourceError) as err:
            src.fetch_bars(["AAA"], date(2024, 1, 1), date(2024, 1, 31), "1d")
        msg = str(err.value)
        assert f"127.0.0.1:{port}" in msg
        assert "Start TWS or IB Gateway" in msg and "API" in msg
    finally:
        src.close()
