"""Rebuild the bundled sample market data from real bars shipped in a PyPI wheel.

The `backtesting` package (backtesting.py) ships real daily GOOG bars (2004-08-19 to
2013-03-01) and real hourly EURUSD bars (2017-04-19 to 2018-02-07) as CSV test fixtures.
We convert them once to Parquet in our canonical bar shape and commit the result, so the
demo never needs that package (or the network) at run time.

    uv run --with backtesting==0.6.6 python scripts/build_sample_data.py
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import polars as pl

OUT = Path(__file__).resolve().parents[1] / "trading_pipeline" / "marketdata" / "sample_data"


def _load(name: str, symbol: str, timeframe: str, fmt: str) -> pl.DataFrame:
    path = resources.files("backtesting.test") / name
    df = pl.read_csv(str(path))
    df = df.rename({df.columns[0]: "ts"})
    return (
        df.select(
            pl.lit(symbol).alias("symbol"),
            pl.lit(timeframe).alias("timeframe"),
            pl.col("ts").str.strptime(pl.Datetime("us"), fmt),
            pl.col("Open").cast(pl.Float64).alias("open"),
            pl.col("High").cast(pl.Float64).alias("high"),
            pl.col("Low").cast(pl.Float64).alias("low"),
            pl.col("Close").cast(pl.Float64).alias("close"),
            pl.col("Volume").cast(pl.Float64).alias("volume"),
        )
        .sort("ts")
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    _load("GOOG.csv", "GOOG", "1d", "%Y-%m-%d").write_parquet(OUT / "GOOG_1d.parquet")
    _load("EURUSD.csv", "EURUSD", "1h", "%Y-%m-%d %H:%M:%S").write_parquet(
        OUT / "EURUSD_1h.parquet"
    )
    for p in sorted(OUT.glob("*.parquet")):
        print(p.name, pl.read_parquet(p).shape)


if __name__ == "__main__":
    main()
