"""More sources of corporate actions than a hand-written file: derived from a vendor's adjusted
closes, or fetched from Alpaca's corporate actions API.

Both give a frame with :data:`~trading_pipeline.marketdata.corporate_actions.SCHEMA`'s columns
(``warning`` empty) that :func:`store_actions` loads through the same checks and the same
all-or-nothing transaction as ``trading actions load`` (``corporate_actions.load_frame``).

**Derived from adjusted closes** (:func:`derive_from_adjusted`). Vendors publish a back-adjusted
close beside the raw one; its ratio to the raw close moves only on ex-dates, so the actions can
be read back from it. For each symbol, sessions in date order:

* ``k_t = close_t / adj_close_t`` and, between consecutive sessions, ``m = k_{t-1} / k_t``;
* ``|m - 1| <= tolerance`` (default 1e-4): nothing happened;
* else, when ``|m - 1| > 0.2`` and ``m`` is within 1% (relative) of a fraction ``p/q`` with
  ``1 <= p, q <= 20`` (the simplest: the smallest ``q`` with such a ``p``, ``p = round(m * q)``):
  a split with ratio ``p/q`` (new shares per old share) on ex-date ``t``;
* else, when ``1 < m < 1.2``: a dividend on ex-date ``t`` of ``D = close_{t-1} * (1 - 1/m)``,
  rounded to 4 decimals: the inverse of the vendor rule "adjustment factor ``= 1 - D / close_{t-1}``
  for the sessions before the ex-date";
* anything else (``m < 1`` that is no reverse split, ``m >= 1.2`` that is no split): a note
  naming the symbol, the date and ``m``, and no action.

One rule on top, because vendor series are sometimes jittered (rounded or recomputed adjusted
closes): in a clean back-adjusted series the factor steps on an ex-date and then holds, so a
dividend candidate counts only when the steps into the session before it and out of its
ex-date are quiet (or splits). A factor that moves on consecutive sessions is noise: those
candidates become notes too, and a noisy series gives notes, not actions.

**Fetched from Alpaca** (:func:`fetch_alpaca`): alpaca-py's ``CorporateActionsClient`` with the
market-data keys and URL override the Alpaca bar source uses. Forward and reverse splits
(ratio ``new_rate / old_rate``, on the ex-date), cash dividends (amount ``rate``, pay date
``payable_date``), name changes (``old_symbol`` becomes ``new_symbol`` on the process date) and
worthless removals (a delisting on the process date; Alpaca has no other delisting type). Any
bad item (a missing field, a ratio of 0) or an HTTP error refuses the whole answer, naming
what was wrong: nothing partial is returned, so nothing partial is stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from trading_pipeline.marketdata.corporate_actions import (
    SCHEMA,
    VALUE_COLUMNS,
    LoadResult,
    load_frame,
)
from trading_pipeline.marketdata.sources import files

if TYPE_CHECKING:
    from trading_pipeline.settings import Settings

TOLERANCE = 1e-4  # |m - 1| at or below this: the adjustment factor did not move
SPLIT_MIN_MOVE = 0.2  # a split moves the factor by more than this
SPLIT_MAX_TERM = 20  # p and q of a split ratio p/q
SPLIT_MAX_ERROR = 0.01  # relative distance of m to p/q
DIVIDEND_MAX_M = 1.2  # a dividend takes less than 1/6 of the price
# the adjusted-close names the files source knowingly leaves out (files.KNOWN_EXTRA)
ADJ_CLOSE_NAMES = tuple(sorted(n for n in files.KNOWN_EXTRA if n.startswith("adj")))
# Alpaca's corporate action types we map, and the kind each becomes
ALPACA_KINDS = {"forward_splits": "split", "reverse_splits": "split", "cash_dividends": "dividend",
                "name_changes": "symbol_change", "worthless_removals": "delisting"}


class ActionsSourceError(ValueError):
    """A source's input cannot give actions; ``problems`` names each one, nothing was kept."""

    def __init__(self, where: str, problems: list[str], hint: str = "") -> None:
        self.problems = problems
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{where}: " + "; ".join(problems[:20]) + more + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class Derived:
    """What :func:`derive_file` found: the actions, and the notes on moves it left alone."""

    actions: pl.DataFrame
    notes: list[str]
    source: str


# ---------------------------------------------------------------- derived from adjusted closes
def read_adjusted(path: Path | str) -> pl.DataFrame:
    """``symbol, session_date, close, adj_close`` of a daily CSV/Parquet bar file, read by the
    files source (same column names, timestamps, symbol from a column or the file name); the
    adjusted close is the column whose normalised name is one of :data:`ADJ_CLOSE_NAMES`
    (``Adj Close``, ``adj_close``, ``adjclose``, ``Adjusted Close``...)."""
    path = Path(path)
    parsed = files.read_bar_file(path, ignore_extra=True)  # raises BarFileError naming file/row/rule
    raw = files._read_raw(path)  # the same rows, in the same order, with every column
    adj = [c for c in raw.columns if files._norm(c) in ADJ_CLOSE_NAMES]
    if not adj:
        raise ActionsSourceError(str(path), [f"no adjusted close column (one of {', '.join(ADJ_CLOSE_NAMES)}, "
                                             f"any case or spacing); found: {', '.join(raw.columns)}"],
                                 "export the bars with their adjusted close")
    if len(adj) > 1:
        raise ActionsSourceError(str(path), [f"several adjusted close columns: {', '.join(adj)}; keep one"])
    if parsed.timeframe != "1d":
        raise ActionsSourceError(str(path), [f"the bars are {parsed.timeframe}, not daily"],
                                 "derive actions from daily bars")
    col = raw[adj[0]]
    text = col.cast(pl.String).str.strip_chars()
    bars = parsed.bars.select(
        "row_number", "symbol", pl.col("ts").dt.date().alias("session_date"), "close", "close_raw",
    ).with_columns(text.alias("adj_close_raw"), text.cast(pl.Float64, strict=False).alias("adj_close"))
    problems = []
    for r in bars.iter_rows(named=True):
        for name, value, given in (("close", r["close"], r["close_raw"]), (adj[0], r["adj_close"], r["adj_close_raw"])):
            if value is None or not math.isfinite(value) or value <= 0:
                problems.append(f"row {r['row_number']} ({r['symbol']} {r['session_date']}): {name} {given!r} "
                                "is not a price > 0")
    dupes = bars.filter(pl.struct("symbol", "session_date").is_duplicated())
    problems += [f"row {r['row_number']}: {r['symbol']} {r['session_date']} appears more than once"
                 for r in dupes.iter_rows(named=True)]
    if problems:
        raise ActionsSourceError(str(path), problems, "fix or remove those rows; nothing was derived")
    return bars.select("symbol", "session_date", "close", "adj_close")


def derive_file(path: Path | str, tolerance: float = TOLERANCE) -> Derived:
    """:func:`derive_from_adjusted` on a bar file, with source ``adj_close:<file name>``."""
    source = f"adj_close:{Path(path).name}"
    actions, notes = derive_from_adjusted(read_adjusted(path), tolerance=tolerance, source=source)
    return Derived(actions, notes, source)


def split_ratio(m: float) -> float | None:
    """``p/q`` when ``m`` is a split's move (module docstring), else None."""
    if abs(m - 1) <= SPLIT_MIN_MOVE:
        return None
    for q in range(1, SPLIT_MAX_TERM + 1):  # the simplest fraction: the smallest q that fits
        p = round(m * q)
        if 1 <= p <= SPLIT_MAX_TERM and abs(m / (p / q) - 1) < SPLIT_MAX_ERROR:
            return p / q
    return None


def derive_from_adjusted(bars: pl.DataFrame, *, tolerance: float = TOLERANCE,
                         source: str = "adj_close") -> tuple[pl.DataFrame, list[str]]:
    """The splits and dividends a vendor's adjusted closes imply, and notes on the moves that
    are neither (the rule is in the module docstring). ``bars``: daily ``symbol``,
    ``session_date`` (or ``ts``), ``close`` and ``adj_close``, prices > 0."""
    if "session_date" not in bars.columns and "ts" in bars.columns:
        bars = bars.with_columns(pl.col("ts").cast(pl.Date).alias("session_date"))
    missing = [c for c in ("symbol", "session_date", "close", "adj_close") if c not in bars.columns]
    if missing:
        raise ActionsSourceError("bars", [f"missing column(s) {', '.join(missing)}; have {', '.join(bars.columns)}"])
    bad = bars.filter(~(pl.col("close") > 0) | ~(pl.col("adj_close") > 0) | pl.col("close").is_null()
                      | pl.col("adj_close").is_null() | ~pl.col("close").is_finite() | ~pl.col("adj_close").is_finite())
    if bad.height:
        raise ActionsSourceError("bars", [f"{r['symbol']} {r['session_date']}: close {r['close']} / adj_close "
                                          f"{r['adj_close']} must be prices > 0" for r in bad.head(20).iter_rows(named=True)])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    frame = bars.select("symbol", "session_date", "close", "adj_close").sort("symbol", "session_date")
    for (symbol,), g in frame.group_by("symbol", maintain_order=True):
        dates, close = g["session_date"].to_list(), g["close"].to_list()
        k = [c / a for c, a in zip(close, g["adj_close"].to_list(), strict=True)]
        m = [k[i - 1] / k[i] for i in range(1, len(k))]  # m[i - 1]: the step into session i
        ratios = [split_ratio(x) for x in m]
        quiet = [abs(x - 1) <= tolerance or r is not None for x, r in zip(m, ratios, strict=True)]
        for i in range(1, len(k)):
            step, ratio, day = m[i - 1], ratios[i - 1], dates[i]
            if abs(step - 1) <= tolerance:
                continue
            if ratio is not None:
                rows.append(_action(symbol, day, "split", ratio=ratio, source=source))
            elif 1 < step < DIVIDEND_MAX_M:
                if (i < 2 or quiet[i - 2]) and (i >= len(k) - 1 or quiet[i]):
                    amount = round(close[i - 1] * (1 - 1 / step), 4)
                    rows.append(_action(symbol, day, "dividend", amount=amount, source=source))
                else:
                    notes.append(f"{symbol} {day}: m = {step:.6f} looks like a dividend, but the adjustment factor "
                                 "also moves on the session before or after: noise, not stored")
            else:
                what = "a fall (m < 1) that is no reverse split" if step < 1 else "a rise that is no split"
                notes.append(f"{symbol} {day}: m = {step:.6f} is {what}: not stored")
    return pl.DataFrame(rows, schema=SCHEMA), notes


def _action(symbol: str, ex_date: date, kind: str, *, source: str, ratio: float | None = None,
            amount: float | None = None, new_symbol: str | None = None, pay_date: date | None = None) -> dict[str, Any]:
    return {"symbol": symbol, "ex_date": ex_date, "kind": kind, "ratio": ratio, "amount": amount,
            "new_symbol": new_symbol, "pay_date": pay_date, "source": source, "warning": None}


# ---------------------------------------------------------------- fetched from Alpaca
def fetch_alpaca(settings: Settings, symbols: Sequence[str], start: date, end: date) -> pl.DataFrame:
    """Alpaca's splits, cash dividends, name changes and worthless removals of ``symbols``
    between ``start`` and ``end`` (inclusive), as actions with source ``alpaca``; raises
    :class:`ActionsSourceError` on any bad item or failed request (module docstring)."""
    import pydantic
    import requests
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import CorporateActionsType
    from alpaca.data.historical.corporate_actions import CorporateActionsClient
    from alpaca.data.models import corporate_actions as models
    from alpaca.data.requests import CorporateActionsRequest

    from trading_pipeline.marketdata.sources.alpaca import KEYS_HINT, URL_HINT

    wanted = sorted({s.strip().upper() for s in symbols if s.strip()})
    if not wanted:
        raise ActionsSourceError("alpaca corporate actions", ["no symbols given"], "pass --symbols A,B")
    if end < start:
        raise ActionsSourceError("alpaca corporate actions", [f"end {end} is before start {start}"])
    if not settings.alpaca_api_key or not settings.alpaca_secret_key:
        raise ActionsSourceError("alpaca corporate actions", ["no API keys"], KEYS_HINT)
    url = settings.alpaca_data_url_override
    where = f"alpaca corporate actions from {url or 'the Alpaca data API'}"
    client = CorporateActionsClient(settings.alpaca_api_key, settings.alpaca_secret_key, raw_data=True,
                                    url_override=url)
    types = [CorporateActionsType.FORWARD_SPLIT, CorporateActionsType.REVERSE_SPLIT,
             CorporateActionsType.CASH_DIVIDEND, CorporateActionsType.NAME_CHANGE,
             CorporateActionsType.WORTHLESS_REMOVAL]
    request = CorporateActionsRequest(symbols=wanted, start=start, end=end, types=types, limit=None)
    try:
        raw = client.get_corporate_actions(request)
    except APIError as exc:
        code = exc.status_code
        hint = KEYS_HINT if code in (401, 403) else URL_HINT if code is None or code >= 500 else "check the request"
        raise ActionsSourceError(where, [f"HTTP {code}: {str(exc)[:300]}"], f"nothing fetched; {hint}") from exc
    except (requests.exceptions.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ActionsSourceError(where, [f"malformed answer ({type(exc).__name__}: {str(exc)[:200]})"],
                                 f"nothing fetched; {URL_HINT}") from exc
    except requests.exceptions.RequestException as exc:
        raise ActionsSourceError(where, [f"cannot reach it ({type(exc).__name__})"], URL_HINT) from exc
    if not isinstance(raw, dict):
        raise ActionsSourceError(where, [f"malformed answer: corporate_actions is a {type(raw).__name__}"], URL_HINT)
    model_of = {"forward_splits": models.ForwardSplit, "reverse_splits": models.ReverseSplit,
                "cash_dividends": models.CashDividend, "name_changes": models.NameChange,
                "worthless_removals": models.WorthlessRemoval}
    rows, problems = [], []
    for kind_key, items in raw.items():
        if kind_key not in model_of:
            if kind_key not in {f"{t.value}s" for t in CorporateActionsType}:
                problems.append(f"unknown corporate action type {kind_key!r}")
            continue  # a type we did not ask for
        if not isinstance(items, list):
            problems.append(f"{kind_key} is not a list")
            continue
        for i, item in enumerate(items):
            label = f"{kind_key}[{i}]" + (f" ({item.get('symbol') or item.get('old_symbol')})"
                                          if isinstance(item, dict) else "")
            try:
                a = model_of[kind_key](corporate_action_type=kind_key, **item)
            except (pydantic.ValidationError, TypeError) as exc:
                errs = exc.errors() if isinstance(exc, pydantic.ValidationError) else [{"loc": (), "msg": str(exc)}]
                problems.append(f"{label}: " + ", ".join(f"{'.'.join(map(str, e['loc']))} {e['msg']}".strip()
                                                        for e in errs))
                continue
            row, problem = _alpaca_action(kind_key, a)
            if problem:
                problems.append(f"{label}: {problem}")
            elif row is not None and row["symbol"] in wanted:
                rows.append(row)
    if problems:
        raise ActionsSourceError(where, problems, "nothing fetched; the answer is refused whole")
    return pl.DataFrame(rows, schema=SCHEMA).unique(maintain_order=True).sort("symbol", "ex_date", "kind")


def _alpaca_action(kind_key: str, a: Any) -> tuple[dict[str, Any] | None, str | None]:
    """One Alpaca action as ours, or the problem with it."""
    if kind_key in ("forward_splits", "reverse_splits"):
        if not (a.old_rate > 0 and a.new_rate > 0 and math.isfinite(a.old_rate) and math.isfinite(a.new_rate)):
            return None, f"split rates must be > 0, got new_rate {a.new_rate}, old_rate {a.old_rate}"
        return _action(a.symbol, a.ex_date, "split", ratio=a.new_rate / a.old_rate, source="alpaca"), None
    if kind_key == "cash_dividends":
        if not (a.rate > 0 and math.isfinite(a.rate)):
            return None, f"dividend rate must be > 0, got {a.rate}"
        return _action(a.symbol, a.ex_date, "dividend", amount=a.rate, pay_date=a.payable_date, source="alpaca"), None
    if kind_key == "name_changes":
        return _action(a.old_symbol, a.process_date, "symbol_change", new_symbol=a.new_symbol, source="alpaca"), None
    return _action(a.symbol, a.process_date, "delisting", source="alpaca"), None


# ---------------------------------------------------------------- store
def as_rows(actions: pl.DataFrame) -> pl.DataFrame:
    """``actions`` as the string rows ``corporate_actions.load_frame`` checks; ``line`` is the
    action's place (1, 2, ...) in ``actions``."""
    cols = ("symbol", "ex_date", "kind", *VALUE_COLUMNS)
    return actions.select(
        *[pl.col(c).map_elements(repr, return_dtype=pl.String).alias(c) if actions.schema[c] == pl.Float64
          else pl.col(c).cast(pl.String) for c in cols],
    ).with_columns((pl.int_range(pl.len()) + 1).alias("line"))


def store_actions(warehouse_path: Path | str, actions: pl.DataFrame, label: str, *,
                  dry_run: bool = False) -> LoadResult:
    """Load ``actions`` (one source) into ``raw.corporate_actions`` in one transaction, with the
    file loader's checks; ``dry_run`` runs them all and rolls back. Raises
    ``corporate_actions.ActionsError`` with every problem, storing nothing."""
    from trading_pipeline.marketdata import warehouse as wh

    sources = actions["source"].unique().to_list()
    if len(sources) > 1:
        raise ValueError(f"store one source at a time, got {sources}")
    source = sources[0] if sources else "none"
    rows = as_rows(actions)
    with wh.writer(warehouse_path) as con:
        if not dry_run:
            return wh.transaction(con, lambda: load_frame(con, rows, source, label))
        con.execute("BEGIN TRANSACTION")
        try:
            return load_frame(con, rows, source, label)
        finally:
            wh.rollback(con)
