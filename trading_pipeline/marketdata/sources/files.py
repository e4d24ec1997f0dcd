"""CSV and Parquet bar files: one file or a folder of them, in the shapes common exports use.

Accepted: a symbol column or the symbol in the file name (``AAPL.csv``, ``AAPL_1d.parquet``);
one timestamp column (``ts``, ``timestamp``, ``datetime``, ``date``, ``time``, ``<DTYYYYMMDD>``...)
or separate date and time columns; ISO, ``YYYYMMDD``, US ``MM/DD/YYYY``, ``DD.MM.YYYY``,
``YYYY.MM.DD`` and epoch (s/ms/us/ns) timestamps, with or without a UTC offset. Naive
intraday timestamps are read in the exchange's timezone unless ``tz`` says otherwise.

Problems with a whole file (unreadable, empty, half-written, missing or unknown columns,
unknown timezone, unparseable timestamps) raise :class:`BarFileError` naming the file, the
row and the rule, and nothing is loaded. Problems with single rows are left to
:mod:`trading_pipeline.marketdata.quality`, which rejects those rows with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from trading_pipeline.marketdata.bars import TIMEFRAMES

SUFFIXES = {".csv", ".txt", ".parquet", ".pq"}

ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym", "code", "instrument"),
    "ts": ("ts", "timestamp", "datetime", "date_time", "datetime_utc", "time_stamp", "t",
           "open_time", "gmt_time", "local_time", "bar_time"),
    "date": ("date", "day", "dtyyyymmdd", "trade_date", "session_date"),
    "time": ("time", "hhmmss", "trade_time"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "last"),
    "volume": ("volume", "vol", "v", "volume_traded"),
}
# Columns common exports carry that we knowingly leave out.
KNOWN_EXTRA = {"adj_close", "adjclose", "adjusted_close", "openint", "open_interest", "oi",
               "vwap", "trade_count", "trades", "n", "dividends", "stock_splits", "per",
               "timeframe", "currency", "exchange"}

DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%d %H:%M:%S%:z", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S%.f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d %H:%M", "%Y%m%d %H%M%S", "%Y%m%d %H:%M:%S", "%Y%m%d %H:%M",
)
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y", "%d.%m.%Y", "%Y.%m.%d", "%Y/%m/%d")


class BarFileError(ValueError):
    """A bar file cannot be loaded at all. The message names file, row and rule."""

    def __init__(self, path: Path | str, rule: str, message: str, row: int | None = None):
        where = f"{path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message} (rule: {rule})")
        self.path, self.rule, self.row = str(path), rule, row


@dataclass(frozen=True)
class ParsedFile:
    path: Path
    timeframe: str
    bars: pl.DataFrame  # canonical columns as strings/floats + row_number + *_raw columns
    aware: bool  # timestamps carried an explicit offset


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().strip("<>").lower()).strip("_")


def discover(path: Path | str) -> list[Path]:
    """The bar files at a path: the file itself, or every CSV/Parquet file below a folder."""
    p = Path(path)
    if not p.exists():
        raise BarFileError(p, "exists", "no such file or folder")
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise BarFileError(p, "format", f"unsupported file type {p.suffix!r}; use .csv or .parquet")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise BarFileError(p, "exists", "folder holds no .csv or .parquet files")
    return files


def _symbol_from_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    token = re.split(r"[_\-\s]+", stem)[0]
    if not token:
        raise BarFileError(path, "symbol", "no symbol column and no symbol in the file name")
    return token.upper()


def _read_raw(path: Path) -> pl.DataFrame:
    if path.stat().st_size == 0:
        raise BarFileError(path, "non_empty", "the file is empty")
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # pyarrow/polars raise several kinds for a cut file
            raise BarFileError(
                path, "complete_file", f"not a complete Parquet file ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:160]}); it may still be being written"
            ) from exc
    raw = path.read_bytes()
    text_lines = raw.splitlines()
    if len(text_lines) < 2:
        raise BarFileError(path, "non_empty", "the file has a header but no rows")
    header = text_lines[0].decode("utf-8", "replace")
    sep = max((",", ";", "\t", "|"), key=header.count)
    n_fields = header.count(sep) + 1
    last = text_lines[-1]
    if not raw.endswith(b"\n") and last.decode("utf-8", "replace").count(sep) + 1 < n_fields:
        raise BarFileError(
            path, "complete_file",
            f"the last line has {last.decode('utf-8', 'replace').count(sep) + 1} of {n_fields} "
            "fields and no line end: the file looks half-written; wait for the export to finish "
            "or re-export it",
            row=len(text_lines),
        )
    try:
        return pl.read_csv(raw, separator=sep, infer_schema=False, truncate_ragged_lines=False)
    except pl.exceptions.ComputeError as exc:
        m = re.search(r"(\d+)", str(exc))
        raise BarFileError(
            path, "csv_format", f"malformed CSV: {str(exc).splitlines()[0][:200]}",
            row=int(m.group(1)) if m else None,
        ) from exc


def _map_columns(path: Path, df: pl.DataFrame, ignore_extra: bool) -> dict[str, str]:
    """canonical name -> column name in the file."""
    normed = {_norm(c): c for c in df.columns}
    mapping: dict[str, str] = {}
    for canon, aliases in ALIASES.items():
        for a in aliases:
            if a in normed:
                mapping[canon] = normed[a]
                break
    # a lone "date" or "time" column is the timestamp; so is pandas' unnamed index column
    first = _norm(df.columns[0])
    if "ts" not in mapping and "date" not in mapping and first in ("", "unnamed_0", "index"):
        mapping["ts"] = df.columns[0]
    if "ts" not in mapping:
        if "date" in mapping and "time" not in mapping:
            mapping["ts"] = mapping.pop("date")
        elif "time" in mapping and "date" not in mapping:
            mapping["ts"] = mapping.pop("time")
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in mapping]
    if "ts" not in mapping and "date" not in mapping:
        missing.insert(0, "timestamp (ts/timestamp/datetime/date)")
    if missing:
        raise BarFileError(
            path, "required_columns",
            f"missing column(s): {', '.join(missing)}; found: {', '.join(df.columns)}",
        )
    used = set(mapping.values())
    extra = [c for c in df.columns if c not in used and _norm(c) not in KNOWN_EXTRA]
    if extra and not ignore_extra:
        raise BarFileError(
            path, "unexpected_columns",
            f"unexpected column(s): {', '.join(extra)}; rename them, remove them, or pass "
            "--ignore-extra-columns to load the file without them",
        )
    return mapping


def _check_tz(path: Path, tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BarFileError(
            path, "timezone", f"unknown timezone {tz!r}; use an IANA name like 'America/New_York' or 'UTC'"
        ) from None


def _parse_ts(path: Path, s: pl.Series, row_numbers: pl.Series) -> tuple[pl.Series, bool, bool]:
    """Parse a timestamp column. Returns (naive-or-UTC datetimes, aware, date_only)."""
    if s.dtype == pl.Date:
        return s.cast(pl.Datetime("us")), False, True
    if isinstance(s.dtype, pl.Datetime):
        if s.dtype.time_zone:
            return s.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.Datetime("us")), True, False
        return s.cast(pl.Datetime("us")), False, False
    if s.dtype.is_integer() or s.dtype.is_float():
        s = s.cast(pl.Int64).cast(pl.String)
    s = s.cast(pl.String).str.strip_chars()
    nonnull = s.is_not_null() & (s != "")
    if not nonnull.any():
        raise BarFileError(path, "timestamp", "the timestamp column is empty")
    # epoch numbers
    if s.filter(nonnull).str.contains(r"^\d{9,19}$").all():
        v = s.cast(pl.Int64, strict=False)
        mx = v.max()
        unit = "s" if mx < 10**11 else "ms" if mx < 10**14 else "us" if mx < 10**17 else "ns"
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[unit]
        us = v * scale if scale else v // 1000
        return us.cast(pl.Datetime("us")), True, False
    best: tuple[int, str, bool] | None = None
    for fmt, date_only in [(f, True) for f in DATE_FORMATS] + [(f, False) for f in DATETIME_FORMATS]:
        if date_only:
            parsed = s.str.strptime(pl.Date, fmt, strict=False)
        else:
            parsed = s.str.strptime(pl.Datetime("us"), fmt, strict=False)
        ok = int((parsed.is_not_null() & nonnull).sum())
        if ok == int(nonnull.sum()):
            aware = "z" in fmt.lower()
            if date_only:
                return parsed.cast(pl.Datetime("us")), False, True
            if aware:
                parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            return parsed.cast(pl.Datetime("us")), aware, False
        if best is None or ok > best[0]:
            best = (ok, fmt, date_only)
    assert best is not None
    _, fmt, date_only = best
    parsed = s.str.strptime(pl.Date if date_only else pl.Datetime("us"), fmt, strict=False)
    bad = (parsed.is_null() & nonnull).arg_true()[0]
    raise BarFileError(
        path, "timestamp",
        f"cannot parse timestamp {s[bad]!r} (closest format {fmt!r} parses "
        f"{best[0]} of {int(nonnull.sum())} rows)",
        row=int(row_numbers[bad]),
    )


def _infer_timeframe(path: Path, df: pl.DataFrame, date_only: bool) -> str:
    if date_only or df.select((pl.col("ts").dt.time() == pl.time(0)).all()).item():
        return "1d"
    diffs = (
        df.select("symbol", "ts").unique().sort("symbol", "ts")
        .select(pl.col("ts").diff().over("symbol").dt.total_minutes().alias("d"))
        .filter(pl.col("d") > 0)["d"]
    )
    if diffs.is_empty():
        raise BarFileError(path, "timeframe", "cannot infer the bar size from one bar; pass --timeframe")
    step = int(diffs.median())
    for tf, minutes in TIMEFRAMES.items():
        if minutes == step:
            return tf
    raise BarFileError(
        path, "timeframe",
        f"bars are {step} minutes apart, which is no supported timeframe "
        f"({', '.join(TIMEFRAMES)}); pass --timeframe",
    )


def read_bar_file(
    path: Path | str,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    tz: str | None = None,
    default_tz: str = "America/New_York",
    ignore_extra: bool = False,
) -> ParsedFile:
    """Read one file into the canonical columns (numbers still unvalidated).

    Numeric columns come back as Float64 with a ``<col>_raw`` string beside them, so the
    quality rules can tell a missing value from text that is not a number.
    """
    path = Path(path)
    if tz is not None:
        _check_tz(path, tz)
    df = _read_raw(path)
    if df.height == 0:
        raise BarFileError(path, "non_empty", "the file has a header but no rows")
    mapping = _map_columns(path, df, ignore_extra)
    is_csv = path.suffix.lower() not in {".parquet", ".pq"}
    rows = pl.Series("row_number", range(2 if is_csv else 1, df.height + (2 if is_csv else 1)), pl.Int64)
    if "ts" in mapping:
        ts_col = df[mapping["ts"]]
    else:
        d = df[mapping["date"]].cast(pl.String)
        t = df[mapping["time"]].cast(pl.String) if "time" in mapping else None
        ts_col = d if t is None else pl.Series(
            [f"{a} {b}" if a is not None and b is not None else None for a, b in zip(d, t, strict=True)]
        )
    ts, aware, date_only = _parse_ts(path, ts_col, rows)
    if symbol:
        sym = pl.Series("symbol", [symbol.upper()] * df.height)
    elif "symbol" in mapping:
        sym = df[mapping["symbol"]].cast(pl.String).str.strip_chars().str.to_uppercase()
    else:
        sym = pl.Series("symbol", [_symbol_from_name(path)] * df.height)
    out = pl.DataFrame({"row_number": rows, "symbol": sym, "ts": ts})
    for c in ("open", "high", "low", "close", "volume"):
        raw = df[mapping[c]]
        raw_s = raw.cast(pl.String).str.strip_chars() if raw.dtype == pl.String else raw.cast(pl.String)
        out = out.with_columns(
            raw_s.alias(f"{c}_raw"),
            raw_s.cast(pl.Float64, strict=False).alias(c),
        )
    tf = timeframe or _infer_timeframe(path, out, date_only)
    if tf not in TIMEFRAMES:
        raise BarFileError(path, "timeframe", f"unknown timeframe {tf!r}; use one of {', '.join(TIMEFRAMES)}")
    if tf == "1d":
        out = out.with_columns(pl.col("ts").dt.truncate("1d"))
    elif not aware:
        zone = tz or default_tz
        _check_tz(path, zone)
        out = out.with_columns(
            pl.col("ts").dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        )
    out = out.with_columns(pl.lit(tf).alias("timeframe"))
    return ParsedFile(path=path, timeframe=tf, bars=out, aware=aware)


class FileBarSource:
    """Bars from a CSV/Parquet file or folder (the ``files`` source)."""

    name = "files"

    def __init__(self, path: Path | str, **options: object) -> None:
        self.path = Path(path)
        self.options = options

    def parse(self) -> list[ParsedFile]:
        return [read_bar_file(p, **self.options) for p in discover(self.path)]  # type: ignore[arg-type]

    def fetch_bars(
        self, symbols: Sequence[str] | None, start: date, end: date, timeframe: str
    ) -> pl.DataFrame:
        frames = [pf.bars for pf in self.parse() if pf.timeframe == timeframe]
        return select_bars(frames, symbols, start, end)


def select_bars(
    frames: Iterable[pl.DataFrame], symbols: Sequence[str] | None, start: date, end: date
) -> pl.DataFrame:
    frames = list(frames)
    if not frames:
        return pl.DataFrame()
    df = pl.concat(frames, how="diagonal_relaxed")
    if symbols is not None:
        df = df.filter(pl.col("symbol").is_in(list(symbols)))
    return df.filter(pl.col("ts").dt.date().is_between(start, end) | pl.col("ts").is_null())
