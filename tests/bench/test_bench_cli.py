"""The benches' CLI path (bench/_cli.py): the files it writes are what `trading ingest` reads
back bar for bar, and the target and load checks say what issue 13 asks."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import _cli  # noqa: E402
from trading_pipeline.marketdata.sources.files import discover, read_bar_file  # noqa: E402
from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource  # noqa: E402

COLS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]


def _read_back(path: Path) -> pl.DataFrame:
    frames = [read_bar_file(f).bars for f in discover(path)]
    return pl.concat(frames).select(COLS).sort("symbol", "ts")


@pytest.mark.parametrize("files", ["3", "symbol"])
def test_daily_parquet_folder_reads_back_as_the_same_bars(tmp_path, files):
    bars = SyntheticBarSource(4).fetch_bars(None, date(2023, 1, 3), date(2023, 2, 28), "1d")
    paths = _cli.write_bar_files(bars, tmp_path / "pq", files=files)
    assert len(paths) == (3 if files == "3" else 4)
    assert _read_back(tmp_path / "pq").equals(bars.select(COLS).sort("symbol", "ts"))


def test_intraday_parquet_keeps_utc_instants(tmp_path):
    bars = SyntheticBarSource(2).fetch_bars(None, date(2023, 6, 1), date(2023, 6, 1), "1m")
    _cli.write_bar_files(bars, tmp_path / "pq", files="1")
    assert _read_back(tmp_path / "pq").equals(bars.select(COLS).sort("symbol", "ts"))


def test_one_symbol_csv_names_the_symbol(tmp_path):
    bars = SyntheticBarSource(1).fetch_bars(None, date(2020, 1, 2), date(2020, 3, 31), "1d")
    [path] = _cli.write_bar_files(bars, tmp_path / "csv", files="symbol", fmt="csv")
    assert path.name == "SYN0000.csv" and "symbol" not in path.read_text().splitlines()[0]
    assert _read_back(path).equals(bars.select(COLS).sort("symbol", "ts"))


def test_target_and_load_check():
    assert _cli.target_seconds(2.0) == 11.0
    ok = _cli.CliRun(["ingest", "x"], 1.0, {"loaded": 5, "rejected": 0, "runs": [{"job": "j", "success": True, "seconds": 0.5}]})
    _cli.check_loaded(ok, 5)
    assert _cli.run_seconds(ok) == 0.5
    with pytest.raises(SystemExit, match="loaded 5 of 6"):
        _cli.check_loaded(ok, 6)
