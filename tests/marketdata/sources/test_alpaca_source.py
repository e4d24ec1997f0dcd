"""AlpacaBarSource against the local Alpaca stub, through the real alpaca-py data client."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest

from tests.stubs.alpaca_fixtures import (  # noqa: F401
    STUB_KEY,
    STUB_SECRET,
    alpaca_source,
    alpaca_stub,
    dead_url,
)
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.marketdata.bars import SOURCE_SCHEMA
from trading_pipeline.marketdata.sources.alpaca import AlpacaBarSource
from trading_pipeline.marketdata.sources.base import BarSource, SourceError
from trading_pipeline.settings import Settings


def daily_bars(symbols: list[str], days: list[date]) -> pl.DataFrame:
    rows = []
    for i, sym in enumerate(symbols):
        for j, d in enumerate(days):
            px = 100.0 + 10 * i + j + 0.123456789  # non-round floats must survive exactly
            rows.append(
                (
                    sym,
                    "1d",
                    datetime(d.year, d.month, d.day),
                    px,
                    px + 1.5,
                    px - 1.25,
                    px + 0.5,
                    1e6 + j,
                )
            )
    return pl.DataFrame(rows, schema=SOURCE_SCHEMA, orient="row").sort("symbol", "ts")


def intraday_bars(symbols: list[str], timeframe: str, starts: list[datetime]) -> pl.DataFrame:
    rows = []
    for i, sym in enumerate(symbols):
        for j, ts in enumerate(starts):
            px = 50.0 + i + j / 100
            rows.append(
                (sym, timeframe, ts, px, px + 0.1, px - 0.1, px + 0.05, float(100 * (j + 1)))
            )
    return pl.DataFrame(rows, schema=SOURCE_SCHEMA, orient="row").sort("symbol", "ts")


# sessions across the 2024 US DST switch (10 March): Alpaca stamps 05:00 UTC before, 04:00 after
DST_DAYS = [date(2024, 3, d) for d in (6, 7, 8, 11, 12, 13)]


def test_is_a_bar_source(alpaca_source: AlpacaBarSource) -> None:
    assert isinstance(alpaca_source, BarSource)
    assert alpaca_source.name == "alpaca"


def test_daily_bars_round_trip_exactly_across_dst(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    bars = daily_bars(["MSFT", "AAPL"], DST_DAYS)
    alpaca_stub.set_bars(bars)
    got = alpaca_source.fetch_bars(["MSFT", "AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d")
    assert got.schema == pl.Schema(SOURCE_SCHEMA)
    assert got.equals(bars), got
    assert got["ts"].dt.hour().unique().to_list() == [0]  # session midnight, not 04:00/05:00


def test_daily_bars_stamped_at_utc_midnight_keep_their_session(
    alpaca_source: AlpacaBarSource,
) -> None:
    with AlpacaStub(STUB_KEY, STUB_SECRET, daily_stamp="utc_midnight") as stub:
        bars = daily_bars(["GOOG"], DST_DAYS)
        stub.set_bars(bars)
        src = AlpacaBarSource(STUB_KEY, STUB_SECRET, url_override=stub.url)
        assert src.fetch_bars(["GOOG"], DST_DAYS[0], DST_DAYS[-1], "1d").equals(bars)


def test_daily_range_is_inclusive_on_session_dates(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    alpaca_stub.set_bars(daily_bars(["AAPL"], DST_DAYS))
    got = alpaca_source.fetch_bars(["AAPL"], date(2024, 3, 7), date(2024, 3, 11), "1d")
    assert got["ts"].dt.date().to_list() == [date(2024, 3, 7), date(2024, 3, 8), date(2024, 3, 11)]


@pytest.mark.parametrize(
    "timeframe,minutes", [("1m", 1), ("5m", 5), ("15m", 15), ("30m", 30), ("1h", 60)]
)
def test_intraday_round_trip_each_timeframe(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource, timeframe: str, minutes: int
) -> None:
    # 2024-03-08 is EST (14:30 UTC open), 2024-03-11 is EDT (13:30 UTC open)
    starts = [datetime(2024, 3, 8, 14, 30) + timedelta(minutes=minutes * k) for k in range(4)]
    starts += [datetime(2024, 3, 11, 13, 30) + timedelta(minutes=minutes * k) for k in range(4)]
    bars = intraday_bars(["SPY", "QQQ"], timeframe, starts)
    alpaca_stub.set_bars(bars)
    got = alpaca_source.fetch_bars(["SPY", "QQQ"], date(2024, 3, 8), date(2024, 3, 11), timeframe)
    assert got.equals(bars), got


def test_intraday_session_date_is_new_york_not_utc(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    # 19:30 New York on 5 March is 00:30 UTC on 6 March: it belongs to the 5 March session
    late = datetime(2024, 3, 6, 0, 30)
    next_open = datetime(2024, 3, 6, 14, 30)
    early = datetime(2024, 3, 5, 9, 0)  # 04:00 New York, pre-market of 5 March
    alpaca_stub.set_bars(intraday_bars(["AAPL"], "5m", [early, late, next_open]))
    got = alpaca_source.fetch_bars(["AAPL"], date(2024, 3, 5), date(2024, 3, 5), "5m")
    assert got["ts"].to_list() == [early, late]
    got6 = alpaca_source.fetch_bars(["AAPL"], date(2024, 3, 6), date(2024, 3, 6), "5m")
    assert got6["ts"].to_list() == [next_open]


def test_pagination_across_pages_and_symbols(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    starts = [datetime(2024, 3, 8, 14, 30) + timedelta(minutes=k) for k in range(20)]
    bars = intraday_bars(["AAA", "BBB", "CCC"], "1m", starts)  # 60 bars
    alpaca_stub.set_bars(bars)
    alpaca_stub.page_size = 7
    got = alpaca_source.fetch_bars(["CCC", "AAA", "BBB"], date(2024, 3, 8), date(2024, 3, 8), "1m")
    assert got.equals(bars)
    pages = [r for r in alpaca_stub.requests if r[1] == "/v2/stocks/bars"]
    assert len(pages) == 9  # ceil(60 / 7): every page was fetched, none twice


def test_symbol_without_bars_and_empty_range(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    alpaca_stub.set_bars(daily_bars(["AAPL"], DST_DAYS))
    none = alpaca_source.fetch_bars(["NOPE"], DST_DAYS[0], DST_DAYS[-1], "1d")
    assert none.height == 0 and none.schema == pl.Schema(SOURCE_SCHEMA)
    weekend = alpaca_source.fetch_bars(["AAPL"], date(2024, 3, 9), date(2024, 3, 10), "1d")
    assert weekend.height == 0 and weekend.schema == pl.Schema(SOURCE_SCHEMA)
    backwards = alpaca_source.fetch_bars(["AAPL"], date(2024, 3, 10), date(2024, 3, 9), "1d")
    assert backwards.height == 0


def test_missing_symbols_need_a_universe(alpaca_stub: AlpacaStub) -> None:
    alpaca_stub.set_bars(daily_bars(["AAPL", "MSFT"], DST_DAYS))
    with pytest.raises(SourceError, match="symbols"):
        AlpacaBarSource(STUB_KEY, STUB_SECRET, url_override=alpaca_stub.url).fetch_bars(
            None, DST_DAYS[0], DST_DAYS[0], "1d"
        )
    src = AlpacaBarSource(STUB_KEY, STUB_SECRET, url_override=alpaca_stub.url, symbols=["MSFT"])
    assert src.fetch_bars(None, DST_DAYS[0], DST_DAYS[-1], "1d")["symbol"].unique().to_list() == [
        "MSFT"
    ]


def test_unknown_timeframe(alpaca_source: AlpacaBarSource) -> None:
    with pytest.raises(SourceError, match="unknown timeframe"):
        alpaca_source.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[0], "2h")


def test_auth_failure_names_the_key_settings(alpaca_stub: AlpacaStub) -> None:
    src = AlpacaBarSource("wrong", "keys", url_override=alpaca_stub.url)
    with pytest.raises(SourceError, match=r"401.*TRADING_ALPACA_API_KEY"):
        src.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[0], "1d")


def test_missing_keys_fail_early() -> None:
    with pytest.raises(SourceError, match="TRADING_ALPACA_API_KEY"):
        AlpacaBarSource("", "")


def test_server_down_names_the_url_setting(dead_url: str) -> None:
    src = AlpacaBarSource(STUB_KEY, STUB_SECRET, url_override=dead_url)
    with pytest.raises(SourceError, match=r"cannot reach.*TRADING_ALPACA_DATA_URL_OVERRIDE"):
        src.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[0], "1d")


def test_dropped_connection_and_server_error(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    alpaca_stub.set_bars(daily_bars(["AAPL"], DST_DAYS))
    alpaca_stub.drop_next()
    with pytest.raises(SourceError, match="cannot reach"):
        alpaca_source.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d")
    alpaca_stub.fail_next(status=500)
    with pytest.raises(SourceError, match=r"HTTP 500.*TRADING_ALPACA_DATA_URL_OVERRIDE"):
        alpaca_source.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d")
    # the faults were one-shot: the next call works
    assert alpaca_source.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d").height == len(
        DST_DAYS
    )


def test_failure_on_a_later_page_fails_the_fetch(
    alpaca_stub: AlpacaStub, alpaca_source: AlpacaBarSource
) -> None:
    """Half a result must never look like a complete one."""
    starts = [datetime(2024, 3, 8, 14, 30) + timedelta(minutes=k) for k in range(10)]
    alpaca_stub.set_bars(intraday_bars(["AAA"], "1m", starts))
    alpaca_stub.page_size = 4
    alpaca_stub.pass_next(1)
    alpaca_stub.fail_next(status=503)
    with pytest.raises(SourceError, match="HTTP 503"):
        alpaca_source.fetch_bars(["AAA"], date(2024, 3, 8), date(2024, 3, 8), "1m")
    assert len([r for r in alpaca_stub.requests if r[1] == "/v2/stocks/bars"]) == 2


@pytest.mark.parametrize(
    "body",
    [
        "<html>502 Bad Gateway</html>",
        '{"bars": {"AAPL": [{"t": "not-a-time", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}]}}',
        '{"bars": {"AAPL": [{"t": "2024-03-06T05:00:00Z", "o": "x"}]}, "next_page_token": null}',
        '{"unexpected": true}',
    ],
)
def test_malformed_payload_is_a_source_error(
    alpaca_source: AlpacaBarSource, alpaca_stub: AlpacaStub, body: str
) -> None:
    alpaca_stub.malformed_next(body=body)
    with pytest.raises(SourceError, match="malformed"):
        alpaca_source.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d")


def test_from_settings_maps_alpaca_settings(alpaca_stub: AlpacaStub) -> None:
    alpaca_stub.set_bars(daily_bars(["AAPL"], DST_DAYS))
    settings = Settings(
        alpaca_api_key=STUB_KEY,
        alpaca_secret_key=STUB_SECRET,
        alpaca_data_url_override=alpaca_stub.url,
    )
    src = AlpacaBarSource.from_settings(settings)
    assert src.fetch_bars(["AAPL"], DST_DAYS[0], DST_DAYS[-1], "1d").height == len(DST_DAYS)
