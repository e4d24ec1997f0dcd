"""The files source reads common export shapes and refuses broken files with a clear error."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from trading_pipeline.marketdata.sources.files import BarFileError, discover, read_bar_file

GOOD = "Date,Open,High,Low,Close,Volume\n2013-02-28,801.1,806.2,799.0,801.2,2265800\n2013-03-01,797.8,807.1,796.2,806.2,2175400\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_daily_csv_symbol_from_file_name(tmp_path):
    pf = read_bar_file(write(tmp_path, "goog_daily.csv", GOOD))
    assert pf.timeframe == "1d"
    assert pf.bars["symbol"].unique().to_list() == ["GOOG"]
    assert pf.bars["ts"].to_list() == [datetime(2013, 2, 28), datetime(2013, 3, 1)]
    assert pf.bars["row_number"].to_list() == [2, 3]
    assert pf.bars["close"].to_list() == [801.2, 806.2]


@pytest.mark.parametrize(
    "header,rows",
    [
        ("Date,Open,High,Low,Close,Volume", ["20130228,1,2,0.5,1.5,10", "20130301,1,2,0.5,1.5,10"]),
        ("date,open,high,low,close,volume", ["02/28/2013,1,2,0.5,1.5,10", "03/01/2013,1,2,0.5,1.5,10"]),
        ("<TICKER>,<DTYYYYMMDD>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>",
         ["XYZ,20130228,1,2,0.5,1.5,10", "XYZ,20130301,1,2,0.5,1.5,10"]),
        ("Date,Open,High,Low,Close,Adj Close,Volume", ["2013-02-28,1,2,0.5,1.5,1.4,10", "2013-03-01,1,2,0.5,1.5,1.4,10"]),
        ("timestamp;open;high;low;close;volume", ["2013-02-28;1;2;0.5;1.5;10", "2013-03-01;1;2;0.5;1.5;10"]),
    ],
)
def test_common_daily_formats(tmp_path, header, rows):
    pf = read_bar_file(write(tmp_path, "XYZ.csv", "\n".join([header, *rows]) + "\n"))
    assert pf.timeframe == "1d"
    assert pf.bars["ts"].to_list() == [datetime(2013, 2, 28), datetime(2013, 3, 1)]
    assert pf.bars["symbol"].to_list() == ["XYZ", "XYZ"]


def test_intraday_naive_times_are_read_in_exchange_time(tmp_path):
    text = "Date,Time,Open,High,Low,Close,Volume\n2013-03-01,09:30,1,2,0.5,1.5,10\n2013-03-01,09:31,1,2,0.5,1.5,10\n"
    pf = read_bar_file(write(tmp_path, "ABC_1m.csv", text))
    assert pf.timeframe == "1m"
    # 09:30 New York (EST, UTC-5) is 14:30 UTC
    assert pf.bars["ts"].to_list() == [datetime(2013, 3, 1, 14, 30), datetime(2013, 3, 1, 14, 31)]


def test_intraday_offsets_and_epoch(tmp_path):
    text = "ts,open,high,low,close,volume\n2013-03-01T09:30:00-05:00,1,2,0.5,1.5,1\n2013-03-01T09:35:00-05:00,1,2,0.5,1.5,1\n"
    pf = read_bar_file(write(tmp_path, "A.csv", text))
    assert pf.timeframe == "5m" and pf.aware
    assert pf.bars["ts"][0] == datetime(2013, 3, 1, 14, 30)
    epoch = "t,o,h,l,c,v\n1362148200,1,2,0.5,1.5,1\n1362148260,1,2,0.5,1.5,1\n"
    pf = read_bar_file(write(tmp_path, "B.csv", epoch))
    assert pf.timeframe == "1m" and pf.bars["ts"][0] == datetime(2013, 3, 1, 14, 30)


def test_explicit_timezone(tmp_path):
    text = "Date,Time,Open,High,Low,Close,Volume\n2013-03-01,14:30,1,2,0.5,1.5,10\n2013-03-01,14:31,1,2,0.5,1.5,10\n"
    pf = read_bar_file(write(tmp_path, "ABC.csv", text), tz="UTC")
    assert pf.bars["ts"][0] == datetime(2013, 3, 1, 14, 30)


def test_parquet_and_folder(tmp_path):
    df = pl.DataFrame({"symbol": ["A", "A"], "date": ["2013-02-28", "2013-03-01"], "open": [1.0, 1.0],
                       "high": [2.0, 2.0], "low": [0.5, 0.5], "close": [1.5, 1.5], "volume": [1, 2]})
    (tmp_path / "d").mkdir()
    df.write_parquet(tmp_path / "d" / "a.parquet")
    write(tmp_path / "d", "B.csv", GOOD)
    files = discover(tmp_path / "d")
    assert [f.name for f in files] == ["B.csv", "a.parquet"]
    pf = read_bar_file(files[1])
    assert pf.bars["symbol"].to_list() == ["A", "A"] and pf.bars["row_number"].to_list() == [1, 2]


@pytest.mark.parametrize(
    "name,text,rule,row",
    [
        ("empty.csv", "", "non_empty", None),
        ("header_only.csv", "Date,Open,High,Low,Close,Volume\n", "non_empty", None),
        ("missing.csv", "Date,Open,High,Low,Close\n2013-03-01,1,2,0.5,1.5\n", "required_columns", None),
        ("extra.csv", "Date,Open,High,Low,Close,Volume,Mood\n2013-03-01,1,2,0.5,1.5,1,happy\n", "unexpected_columns", None),
        ("half.csv", GOOD + "2013-03-04,800.0,80", "complete_file", 4),
        ("badts.csv", "Date,Open,High,Low,Close,Volume\n2013-02-28,1,2,0.5,1.5,1\n2013-13-45,1,2,0.5,1.5,1\n", "timestamp", 3),
        ("notes.txt", "", "non_empty", None),
    ],
)
def test_broken_files_name_file_row_and_rule(tmp_path, name, text, rule, row):
    p = write(tmp_path, name, text)
    with pytest.raises(BarFileError) as exc:
        read_bar_file(p)
    assert exc.value.rule == rule
    assert exc.value.row == row
    assert str(p) in str(exc.value) and f"rule: {rule}" in str(exc.value)


def test_unknown_timezone_is_refused(tmp_path):
    p = write(tmp_path, "A.csv", "Date,Time,Open,High,Low,Close,Volume\n2013-03-01,09:30,1,2,0.5,1.5,10\n")
    with pytest.raises(BarFileError, match="unknown timezone 'Mars/Olympus_Mons'") as exc:
        read_bar_file(p, tz="Mars/Olympus_Mons")
    assert exc.value.rule == "timezone"


def test_truncated_parquet_is_refused(tmp_path):
    df = pl.DataFrame({"ts": ["2013-03-01"], "open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5], "volume": [1]})
    p = tmp_path / "A.parquet"
    df.write_parquet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(BarFileError) as exc:
        read_bar_file(p)
    assert exc.value.rule == "complete_file"


def test_extra_columns_can_be_ignored(tmp_path):
    p = write(tmp_path, "A.csv", "Date,Open,High,Low,Close,Volume,Mood\n2013-03-01,1,2,0.5,1.5,1,happy\n")
    assert read_bar_file(p, ignore_extra=True).bars.height == 1
