"""Corporate actions: splits, dividends, symbol changes and delistings, in ``raw.corporate_actions``.

A file (``trading actions load PATH``) has the columns ``symbol,ex_date,kind`` plus ``ratio``
(a split: new shares per old share, 2 for a 2-for-1, 0.1 for a 1-for-10 reverse split),
``amount`` (a dividend per share, in the symbol's currency), ``new_symbol`` (a symbol change),
and optionally ``pay_date`` (a dividend's) — each where it applies. The whole file is checked
before anything is written; any error refuses it with every problem named by line, and nothing
is stored (the load is one transaction):

* the symbol must be known (``raw.symbols``: its bars were loaded) and the ex-date a session of
  its exchange calendar; a split's ratio and a dividend's amount > 0 and finite; a symbol
  change names the new symbol;
* an action is keyed by (symbol, ex_date, kind): the same key twice in a file or against a
  stored action with other values is an error (delete the stored one first), the same values
  again change nothing (a load is idempotent).

A split is compared with the stored bars: the observed ratio is the close of the session before
the ex-date over the ex-date's open. When it is off the stated ratio by more than a quarter, the
action is still stored (the bars may already be adjusted) but carries a ``warning`` with the
observed ratio, and the load reports it: nothing is adjusted silently.

Raw bars stay raw: dbt builds the adjusted series the indicators and signals are computed on
(``int_adjustment_factors`` and ``int_bars_adjusted``; split-adjusted by default, setting
``TRADING_PRICE_ADJUSTMENT``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from trading_pipeline.marketdata.warehouse import CORPORATE_ACTIONS_DDL

KINDS = ("split", "dividend", "symbol_change", "delisting")
SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._\-/=^]{0,31}$"
MISMATCH = 0.25  # a split whose bars move by a ratio further than this (relative) is warned about

DDL = CORPORATE_ACTIONS_DDL  # created with the raw tables (warehouse.ensure_schema): dbt reads it

SCHEMA = {"symbol": pl.Utf8, "ex_date": pl.Date, "kind": pl.Utf8, "ratio": pl.Float64, "amount": pl.Float64,
          "new_symbol": pl.Utf8, "pay_date": pl.Date, "source": pl.Utf8, "warning": pl.Utf8}
VALUE_COLUMNS = ("ratio", "amount", "new_symbol", "pay_date")


class ActionsError(ValueError):
    """The file cannot be loaded; ``problems`` names each one (``line N: ...``)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded: " + "; ".join(problems[:20]) + more)


@dataclass
class LoadResult:
    loaded: int = 0  # new actions stored
    unchanged: int = 0  # already stored with the same values
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "unchanged": self.unchanged, "warnings": self.warnings}


def _number(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    return float(text)


def read_file(path: Path | str) -> pl.DataFrame:
    """The file's rows as strings (so a bad value is reported, not coerced), with ``line``."""
    path = Path(path)
    try:
        df = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ActionsError(str(path), [f"cannot read it as CSV ({exc})"]) from exc
    df = df.rename({c: c.strip().lower() for c in df.columns})
    missing = [c for c in ("symbol", "ex_date", "kind") if c not in df.columns]
    unknown = [c for c in df.columns if c not in ("symbol", "ex_date", "kind", *VALUE_COLUMNS)]
    if missing or unknown:
        raise ActionsError(str(path), [f"columns must be symbol,ex_date,kind plus ratio, amount, new_symbol, pay_date "
                                       f"where they apply; missing {missing}, unknown {unknown}"])
    if df.is_empty():
        raise ActionsError(str(path), ["no actions in the file"])
    for c in VALUE_COLUMNS:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, pl.Utf8).alias(c))
    return df.with_columns((pl.int_range(pl.len()) + 2).alias("line"))  # line 1 is the header


def validate(rows: pl.DataFrame, calendars_of: dict[str, str], source: str) -> tuple[pl.DataFrame, list[str]]:
    """Typed actions and the problems of ``rows`` (from :func:`read_file`); ``calendars_of``
    maps known symbols to their exchange calendar."""
    import re

    from trading_pipeline.marketdata.calendars import session_dates

    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, date, str], tuple[int, dict]] = {}
    for r in rows.iter_rows(named=True):
        line, errs = r["line"], []
        symbol = (r["symbol"] or "").strip().upper()
        kind = (r["kind"] or "").strip().lower()
        if not re.match(SYMBOL, symbol):
            errs.append(f"symbol {r['symbol']!r} is not a symbol")
        elif symbol not in calendars_of:
            errs.append(f"unknown symbol {symbol} (no bars loaded for it: load its bars first)")
        if kind not in KINDS:
            errs.append(f"kind {r['kind']!r} must be one of {', '.join(KINDS)}")
        ex_date = pay_date = None
        try:
            ex_date = date.fromisoformat((r["ex_date"] or "").strip())
        except ValueError:
            errs.append(f"ex_date {r['ex_date']!r} is not a date (YYYY-MM-DD)")
        try:
            pay_date = date.fromisoformat(r["pay_date"].strip()) if (r["pay_date"] or "").strip() else None
        except ValueError:
            errs.append(f"pay_date {r['pay_date']!r} is not a date (YYYY-MM-DD)")
        ratio = amount = None
        try:
            ratio = _number(r["ratio"])
            amount = _number(r["amount"])
        except ValueError:
            errs.append(f"ratio {r['ratio']!r} / amount {r['amount']!r} must be numbers")
        new_symbol = (r["new_symbol"] or "").strip().upper() or None
        if kind == "split" and (ratio is None or not math.isfinite(ratio) or ratio <= 0):
            errs.append(f"a split needs ratio > 0 (new shares per old share), got {r['ratio']!r}")
        if kind == "dividend" and (amount is None or not math.isfinite(amount) or amount <= 0):
            errs.append(f"a dividend needs amount > 0 (per share), got {r['amount']!r}")
        if kind == "symbol_change" and (new_symbol is None or not re.match(SYMBOL, new_symbol) or new_symbol == symbol):
            errs.append(f"a symbol change needs new_symbol (another symbol), got {r['new_symbol']!r}")
        if kind != "split" and ratio is not None:
            errs.append(f"ratio applies to splits only (this is a {kind})")
        if kind != "dividend" and (amount is not None or pay_date is not None):
            errs.append(f"amount and pay_date apply to dividends only (this is a {kind})")
        if kind != "symbol_change" and new_symbol is not None:
            errs.append(f"new_symbol applies to symbol changes only (this is a {kind})")
        if ex_date is not None and symbol in calendars_of:
            cal = calendars_of[symbol]
            if not session_dates(cal, ex_date, ex_date):
                errs.append(f"ex_date {ex_date} is not a {cal} session")
        if pay_date is not None and ex_date is not None and pay_date < ex_date:
            errs.append(f"pay_date {pay_date} is before the ex_date {ex_date}")
        if errs:
            problems += [f"line {line}: {e}" for e in errs]
            continue
        action = {"symbol": symbol, "ex_date": ex_date, "kind": kind, "ratio": ratio, "amount": amount,
                  "new_symbol": new_symbol, "pay_date": pay_date, "source": source, "warning": None}
        key = (symbol, ex_date, kind)
        if key in seen:
            first, other = seen[key]
            if _values(other) != _values(action):
                problems.append(f"line {line}: {kind} of {symbol} on {ex_date} again with other values "
                                f"(line {first}: {_describe(other)}; here: {_describe(action)})")
            continue
        seen[key] = (line, action)
        out.append(action)
    return pl.DataFrame(out, schema=SCHEMA), problems


def _values(a: dict) -> tuple:
    return tuple(a[c] for c in VALUE_COLUMNS)


def _describe(a: dict) -> str:
    return ", ".join(f"{c}={a[c]}" for c in VALUE_COLUMNS if a[c] is not None) or "no values"


def _split_warnings(con: duckdb.DuckDBPyConnection, actions: pl.DataFrame) -> pl.DataFrame:
    """Each split compared with the stored daily bars around its ex-date (module docstring)."""
    splits = actions.filter(pl.col("kind") == "split")
    if splits.is_empty():
        return actions
    notes: dict[tuple[str, date], str] = {}
    for sym, ex, ratio in splits.select("symbol", "ex_date", "ratio").iter_rows():
        before = con.execute("SELECT close FROM raw.bars_daily WHERE symbol = ? AND timeframe = '1d' "
                             "AND session_date < ? ORDER BY session_date DESC LIMIT 1", [sym, ex]).fetchone()
        on = con.execute("SELECT open FROM raw.bars_daily WHERE symbol = ? AND timeframe = '1d' "
                         "AND session_date = ?", [sym, ex]).fetchone()
        if not before or not on or not on[0]:
            continue
        observed = before[0] / on[0]
        if abs(observed / ratio - 1) > MISMATCH:
            notes[(sym, ex)] = (f"split {ratio:g}:1 on {ex} but the stored bars move by {observed:.3f}x (close "
                                f"{before[0]:g} before, open {on[0]:g} on the ex-date): the bars may already be "
                                "adjusted, or the ratio is wrong")
    return actions.with_columns(
        pl.struct("symbol", "ex_date").map_elements(lambda s: notes.get((s["symbol"], s["ex_date"])),
                                                    return_dtype=pl.Utf8).alias("warning")
    ) if notes else actions


def load(con: duckdb.DuckDBPyConnection, path: Path | str, *, in_transaction: bool = False) -> LoadResult:
    """Check ``path`` whole, then store its new actions (see the module docstring); raises
    :class:`ActionsError` with every problem, storing nothing."""
    return load_frame(con, read_file(path), f"file:{Path(path).name}", str(path))


def load_frame(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame, source: str, label: str) -> LoadResult:
    """:func:`load` for actions that come as rows rather than a file (derived from adjusted
    closes, fetched from a broker: trading_pipeline/marketdata/actions_sources.py): ``rows`` has
    :func:`read_file`'s string columns and ``line``; each stored action carries ``source``, and
    an :class:`ActionsError` names ``label``. The same checks, the same all-or-nothing store."""
    con.execute(DDL)
    calendars_of = dict(con.execute("SELECT symbol, calendar FROM raw.symbols").fetchall())
    actions, problems = validate(rows, calendars_of, source)
    stored = stored_actions(con)
    if stored.height and actions.height:
        both = actions.join(stored, on=["symbol", "ex_date", "kind"], how="inner", suffix="_stored")
        for a in both.iter_rows(named=True):
            mine = {c: a[c] for c in VALUE_COLUMNS}
            theirs = {c: a[f"{c}_stored"] for c in VALUE_COLUMNS}
            if _values(mine) != _values(theirs):
                problems.append(f"{a['kind']} of {a['symbol']} on {a['ex_date']} is stored with other values "
                                f"({_describe(theirs)}; the file: {_describe(mine)}); delete the stored one first")
    if problems:
        raise ActionsError(label, problems)
    new = actions.join(stored.select("symbol", "ex_date", "kind"), on=["symbol", "ex_date", "kind"], how="anti") \
        if stored.height else actions
    new = _split_warnings(con, new)
    result = LoadResult(loaded=new.height, unchanged=actions.height - new.height,
                        warnings=[w for w in new["warning"].to_list() if w])
    if new.height:
        con.register("_actions", new)
        try:
            con.execute("INSERT INTO raw.corporate_actions SELECT symbol, ex_date, kind, ratio, amount, new_symbol, "
                        "pay_date, source, warning, now()::TIMESTAMP FROM _actions")
        finally:
            con.unregister("_actions")
    return result


def stored_actions(con: duckdb.DuckDBPyConnection, symbol: str | None = None, kind: str | None = None) -> pl.DataFrame:
    """The stored actions (empty before the first load), by symbol and ex-date."""
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' "
                         "AND table_name = 'corporate_actions'").fetchone()[0]
    if not exists:
        return pl.DataFrame(schema={**SCHEMA, "loaded_at": pl.Datetime("us")})
    conds, params = [], []
    if symbol:
        conds.append("symbol = ?")
        params.append(symbol.upper())
    if kind:
        conds.append("kind = ?")
        params.append(kind)
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    return con.execute(f"SELECT symbol, ex_date, kind, ratio, amount, new_symbol, pay_date, source, warning, loaded_at "
                       f"FROM raw.corporate_actions {where} ORDER BY symbol, ex_date, kind", params).pl()
