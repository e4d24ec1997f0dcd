"""Universes: named sets of symbols that scans cover and scheduled ingests fetch.

A real market (``TRADING_DATA_SOURCE=alpaca`` or ``ib``) has no "all symbols" a schedule can
ask for, so the symbols come from a universes file (``TRADING_UNIVERSES_FILE``, default
``universes.yaml`` beside ``rules.yaml``; see ``universes.example.yaml``). Each universe takes
its candidates from one place:

* ``symbols: [..]`` a static list;
* ``file: path`` one symbol per line, or a CSV with a ``symbol`` column (relative to the
  universes file);
* ``stored: true`` every symbol with bars in the warehouse;
* ``broker: alpaca`` Alpaca's active, tradable US equities (``TradingClient.get_all_assets``);
* ``broker: ib`` Interactive Brokers has no asset list: the symbols come from ``symbols:`` or
  ``file:`` beside it (saying ``broker: ib`` documents where they trade).

and narrows them with filters: ``min_price``, ``min_avg_dollar_volume`` over ``adv_window``
sessions, ``exchanges`` (from the broker's asset list, else ``raw.symbols``).

Membership is resolved **point in time** for one session D (DESIGN.md #5): a symbol is in on D
only if it has a bar on or before D, is not delisted by D (a ``delisting`` corporate action
whose ex-date, the first session it no longer trades, is on or before D) and passes the
filters computed on its daily bars up to D only. A scheduled *ingest* resolves the same way
except that a symbol with no stored bars yet is kept (it is fetched so it can be judged).

One definition, two readers. Scans get membership per session from the dbt model
``intermediate.int_universe_members`` (``dbt_project/models/intermediate``): :func:`dbt_spec`
hands dbt each scanned universe's candidates and filters, and the model judges every
(symbol, session) of the stored bars with window functions, so a full rebuild gives each old
session its own members. ``trading universe show`` reads that table when it is current (built
from the same spec and no bar, delisting or symbol row written since), and computes the same
rules here (:func:`resolve`) only when it is not: before a build, after new data, for a universe
no scan names, and for ingest, which must judge symbols before any bar exists.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    import duckdb

    from trading_pipeline.settings import Settings

NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/=^]{0,31}$")
# sources that cannot list "everything": a schedule must name the symbols it fetches
NEEDS_SYMBOLS = ("alpaca", "ib")
# exchange names as Alpaca gives them, for the ISO MIC codes raw.symbols holds
EXCHANGE_ALIASES = {"XNYS": "NYSE", "XNAS": "NASDAQ", "XASE": "AMEX", "ARCX": "ARCA", "BATS": "BATS",
                    "XCBO": "BATS", "NYSEARCA": "ARCA", "NYSEMKT": "AMEX"}
NEW_YORK = ZoneInfo("America/New_York")


class UniverseError(ValueError):
    """A universes file or universe that cannot be used; the message names file, universe, field."""


class Universe(BaseModel):
    """One named universe from the file (the kind and the filters)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    description: str = ""
    symbols: list[str] | None = None
    file: Path | None = None
    stored: bool = False
    broker: Literal["alpaca", "ib"] | None = None
    min_price: float | None = Field(default=None, ge=0)
    min_avg_dollar_volume: float | None = Field(default=None, ge=0)
    adv_window: int = Field(default=20, ge=1, le=500)
    exchanges: list[str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Universe:
        lists = [k for k in ("symbols", "file") if getattr(self, k) is not None]
        if self.broker == "alpaca" and (lists or self.stored):
            raise ValueError(f"broker: alpaca lists its own assets; remove {', '.join(lists or ['stored'])}")
        if self.broker == "ib" and not lists:
            raise ValueError("broker: ib has no asset list (IB offers none): give the symbols with "
                             "symbols: [..] or file: PATH beside it")
        kinds = len(lists) + int(self.stored) + int(self.broker == "alpaca")
        if kinds == 0:
            raise ValueError("needs one of symbols: [..], file: PATH, stored: true, broker: alpaca|ib")
        if kinds > 1:
            raise ValueError("give only one of symbols, file, stored, broker: alpaca")
        if self.symbols is not None:
            if not self.symbols:
                raise ValueError("symbols: the list is empty")
            bad = [s for s in self.symbols if not SYMBOL.match(str(s))]
            if bad:
                raise ValueError(f"symbols: {bad} are not symbols")
            self.symbols = sorted({s.upper() for s in self.symbols})
        if self.exchanges is not None and not self.exchanges:
            raise ValueError("exchanges: the list is empty (leave it out for any exchange)")
        return self

    @property
    def kind(self) -> str:
        if self.broker:
            return f"broker:{self.broker}"
        return "symbols" if self.symbols is not None else "file" if self.file is not None else "stored"


@dataclass
class Member:
    """One candidate symbol on one session: kept or dropped, and why."""

    symbol: str
    kept: bool
    reason: str
    exchange: str | None = None
    first_session: date | None = None
    last_close: float | None = None
    avg_dollar_volume: float | None = None
    adv_sessions: int = 0


@dataclass
class Resolution:
    """A universe resolved for one session."""

    universe: str
    kind: str
    session: date
    members: list[Member] = field(default_factory=list)
    for_ingest: bool = False
    # where the answer came from: the dbt table the scans join, or the bars (computed here)
    basis: str = "bars"

    @property
    def symbols(self) -> list[str]:
        return sorted(m.symbol for m in self.members if m.kept)

    @property
    def dropped(self) -> list[Member]:
        return [m for m in self.members if not m.kept]

    def as_dict(self) -> dict[str, Any]:
        return {"universe": self.universe, "kind": self.kind, "session": self.session.isoformat(),
                "for_ingest": self.for_ingest, "basis": self.basis, "symbols": self.symbols, "kept": len(self.symbols),
                "dropped": len(self.dropped), "members": [asdict(m) for m in self.members]}

    def empty_message(self, path: Path | str) -> str:
        """Why nothing is in, and what to do about it."""
        reasons = sorted({m.reason.split(":")[0] for m in self.members})
        why = f"all {len(self.members)} candidates dropped ({'; '.join(reasons[:3])})" if self.members \
            else "it has no candidates"
        fix = ("load their bars (`trading ingest`, or a scheduled ingest, which fetches symbols with no bars yet)"
               if reasons == ["no bars"] else "loosen its filters or fix its list")
        return (f"universe '{self.universe}' ({path}) resolves to no symbols on {self.session}: {why}; "
                f"see `trading universe show {self.universe} --date {self.session} --verbose`, then {fix}")


# ---- the file ----------------------------------------------------------------------------


def _describe(err: dict[str, Any]) -> str:
    typ, got = err["type"], err.get("input")
    if typ == "extra_forbidden":
        return "is not a known field (symbols, file, stored, broker, min_price, min_avg_dollar_volume, " \
               "adv_window, exchanges, description)"
    if typ == "missing":
        return "is required"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{msg}, got {got!r}" if typ != "value_error" else msg


def load_universes(path: Path | str) -> dict[str, Universe]:
    """Read and validate a universes file; every error names the file, the universe and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UniverseError(f"{path}: universes file not found; copy universes.example.yaml there "
                            "or set TRADING_UNIVERSES_FILE") from None
    except yaml.YAMLError as exc:
        raise UniverseError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("universes"), dict):
        raise UniverseError(f"{path}: expected a mapping 'universes:' of name -> universe at the top")
    extra = set(raw) - {"universes"}
    problems = [f"{path}: unknown top-level key(s) {sorted(extra)}"] if extra else []
    out: dict[str, Universe] = {}
    for name, body in raw["universes"].items():
        where = f"{path}: universe '{name}'"
        if not isinstance(body, dict):
            problems.append(f"{where}: expected a mapping of fields")
            continue
        try:
            u = Universe.model_validate({**body, "name": str(name)})
        except ValidationError as exc:
            for err in exc.errors():
                fld = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
                problems.append(f"{where}: {fld} {_describe(err)}" if fld else f"{where}: {_describe(err)}")
            continue
        if u.file is not None:
            f = u.file if u.file.is_absolute() else path.parent / u.file
            if not f.is_file():
                problems.append(f"{where}: file {f} does not exist")
                continue
            u.file = f.resolve()
        out[u.name] = u
    if problems:
        raise UniverseError("\n".join(problems))
    return out


def universe_named(name: str, path: Path | str) -> Universe:
    universes = load_universes(path)
    if name not in universes:
        raise UniverseError(f"{path}: no universe '{name}' (universes: {', '.join(sorted(universes)) or 'none'})")
    return universes[name]


def read_symbol_file(u: Universe, path: Path | str) -> list[str]:
    """Symbols of a ``file:`` universe: one per line (``#`` comments), or a CSV with a ``symbol`` column."""
    assert u.file is not None
    where = f"{path}: universe '{u.name}': file {u.file}"
    try:
        text = u.file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UniverseError(f"{where}: cannot read it ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and "," in lines[0]:
        rows = list(csv.reader(lines))
        header = [c.strip().lower() for c in rows[0]]
        if "symbol" not in header:
            raise UniverseError(f"{where}: a CSV needs a 'symbol' column (columns: {', '.join(header)})")
        col = header.index("symbol")
        values = [(i + 2, r[col].strip() if col < len(r) else "") for i, r in enumerate(rows[1:])]
    else:
        first = lines[0].strip().lower() if lines else ""
        values = [(i + 1, ln.strip()) for i, ln in enumerate(lines) if not (i == 0 and first == "symbol")]
    bad = [f"line {n}: {v!r}" for n, v in values if not SYMBOL.match(v)]
    if bad:
        raise UniverseError(f"{where}: not symbols: {'; '.join(bad[:5])}")
    if not values:
        raise UniverseError(f"{where}: no symbols in it")
    return sorted({v.upper() for _, v in values})


# ---- candidates --------------------------------------------------------------------------


def alpaca_assets(settings: Settings) -> dict[str, str]:
    """symbol -> exchange of Alpaca's active, tradable US equities (the Trading API's asset list)."""
    import requests
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import AssetClass, AssetStatus
    from alpaca.trading.requests import GetAssetsRequest

    if not settings.alpaca_api_key or not settings.alpaca_secret_key:
        raise UniverseError("broker: alpaca needs API keys: set TRADING_ALPACA_API_KEY / TRADING_ALPACA_SECRET_KEY")
    client = TradingClient(settings.alpaca_api_key, settings.alpaca_secret_key, paper=settings.alpaca_paper,
                           url_override=settings.alpaca_url_override)
    try:
        assets = client.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY))
    except APIError as exc:
        raise UniverseError(f"Alpaca's asset list failed: HTTP {exc.status_code}: {str(exc)[:200]}; check "
                            "TRADING_ALPACA_API_KEY / TRADING_ALPACA_SECRET_KEY / TRADING_ALPACA_URL_OVERRIDE") from exc
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise UniverseError(f"cannot fetch Alpaca's asset list ({type(exc).__name__}: {str(exc)[:200]}); check the "
                            "network or TRADING_ALPACA_URL_OVERRIDE") from exc
    return {a.symbol.upper(): str(getattr(a.exchange, "value", a.exchange)) for a in assets  # type: ignore[union-attr]
            if a.tradable and a.status == AssetStatus.ACTIVE}  # type: ignore[union-attr]


def candidates(u: Universe, path: Path | str, settings: Settings,
               con: duckdb.DuckDBPyConnection | None) -> dict[str, str | None]:
    """symbol -> exchange (when the kind knows it) before any point-in-time rule or filter."""
    if u.symbols is not None:
        return dict.fromkeys(u.symbols)
    if u.file is not None:
        return dict.fromkeys(read_symbol_file(u, path))
    if u.broker == "alpaca":
        return dict(alpaca_assets(settings))
    if con is None or not _has_table(con, "bars_daily"):
        return {}
    rows = con.execute("SELECT DISTINCT symbol FROM raw.bars_daily UNION SELECT DISTINCT symbol FROM raw.bars_intraday"
                       ).fetchall()
    return dict.fromkeys(sorted(r[0] for r in rows))


# ---- point in time -----------------------------------------------------------------------


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = ?",
                            [name]).fetchone()[0])


def _stats(con: duckdb.DuckDBPyConnection | None, session: date, window: int) -> dict[str, dict[str, Any]]:
    """Per symbol, from bars and actions on or before ``session`` only: first session, last daily
    close, average dollar volume of the last ``window`` daily bars, exchange, delisting date."""
    out: dict[str, dict[str, Any]] = {}
    if con is None or not _has_table(con, "bars_daily"):
        return out
    for sym, first in con.execute(
            "SELECT symbol, min(session_date) FROM (SELECT symbol, session_date FROM raw.bars_daily UNION ALL "
            "SELECT symbol, session_date FROM raw.bars_intraday) WHERE session_date <= ? GROUP BY symbol",
            [session]).fetchall():
        out[sym] = {"first": first}
    for sym, close, last, adv, n in con.execute(
            "SELECT symbol, arg_max(close, session_date), max(session_date), avg(close * volume), count(*) FROM ("
            "  SELECT symbol, session_date, close, volume FROM raw.bars_daily WHERE session_date <= ?"
            "  QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY session_date DESC) <= ?"
            ") GROUP BY symbol", [session, window]).fetchall():
        out.setdefault(sym, {}).update(close=close, close_on=last, adv=adv, n=n)
    if _has_table(con, "symbols"):
        for sym, exch in con.execute("SELECT symbol, any_value(exchange) FROM raw.symbols GROUP BY symbol").fetchall():
            if sym in out:
                out[sym]["exchange"] = exch
    if _has_table(con, "corporate_actions"):
        for sym, ex in con.execute("SELECT symbol, min(ex_date) FROM raw.corporate_actions "
                                   "WHERE kind = 'delisting' AND ex_date <= ? GROUP BY symbol", [session]).fetchall():
            out.setdefault(sym, {})["delisted"] = ex
    return out


def _exchange_key(name: str) -> str:
    up = name.strip().upper()
    return EXCHANGE_ALIASES.get(up, up)


def accepted_exchanges(u: Universe) -> list[str] | None:
    """Every exchange name (stripped, upper case) that ``u.exchanges`` accepts, aliases spelled out,
    so that a plain ``in`` test decides it here and in SQL alike (None: any exchange)."""
    if not u.exchanges:
        return None
    keys = {_exchange_key(x) for x in u.exchanges}
    return sorted({a for a, k in EXCHANGE_ALIASES.items() if k in keys} | {k for k in keys if k not in EXCHANGE_ALIASES})


# the rule that drops a candidate on a session, checked in this order (int_universe_members.sql
# applies the same codes in the same order); None: in. The ingest_* codes keep the symbol.
DROP_CODES = ("delisted", "exchange_unknown", "exchange", "no_bars", "no_daily_bars", "min_price",
              "min_avg_dollar_volume")


def _verdict(u: Universe, m: Member, delisted: date | None, for_ingest: bool) -> str | None:
    if delisted:
        return "delisted"
    accepted = accepted_exchanges(u)
    if accepted is not None:
        if m.exchange is None:
            if not for_ingest:
                return "exchange_unknown"
        elif m.exchange.strip().upper() not in accepted:
            return "exchange"
    if m.first_session is None:
        return "ingest_no_bars" if for_ingest else "no_bars"
    if (u.min_price is not None or u.min_avg_dollar_volume is not None) and m.last_close is None:
        return "ingest_no_daily_bars" if for_ingest else "no_daily_bars"
    if u.min_price is not None and m.last_close < u.min_price:  # type: ignore[operator]
        return "min_price"
    if u.min_avg_dollar_volume is not None and (m.avg_dollar_volume is None
                                                or m.avg_dollar_volume < u.min_avg_dollar_volume):
        return "min_avg_dollar_volume"
    return None


def _explain(u: Universe, m: Member, code: str | None, session: date, close_on: date | None,
             delisted: date | None) -> Member:
    """Fill in ``m.kept`` and ``m.reason`` from the verdict ``code`` (one wording for both readers)."""
    adv = f"{m.avg_dollar_volume or 0:,.0f} over {m.adv_sessions} session(s)"
    m.kept = code is None or code.startswith("ingest_")
    m.reason = {
        "delisted": f"delisted: delisting ex-date {delisted} is on or before {session}",
        "exchange_unknown": "exchange unknown: neither the broker's asset list nor raw.symbols names it",
        "exchange": f"exchange: {m.exchange} is not in {u.exchanges}",
        "ingest_no_bars": "no bars stored yet: fetched so it can be judged",
        "no_bars": f"no bars: no bar on or before {session}",
        "ingest_no_daily_bars": "no daily bars stored yet: fetched so it can be judged",
        "no_daily_bars": f"no daily bars on or before {session} to apply min_price / min_avg_dollar_volume to",
        "min_price": f"min_price: close {m.last_close or 0:.4g} on {close_on} is below {u.min_price or 0:g}",
        "min_avg_dollar_volume": f"min_avg_dollar_volume: {adv} to {close_on} is below {u.min_avg_dollar_volume or 0:,.0f}",
    }.get(code or "", "")
    if code is None:
        notes = ([f"close {m.last_close:.4g} >= {u.min_price:g}"] if u.min_price is not None else []) + (
            [f"avg dollar volume {adv}"] if u.min_avg_dollar_volume is not None else [])
        m.reason = f"in: first bar {m.first_session}" + ("; " + "; ".join(notes) if notes else "")
    return m


def _judge(u: Universe, sym: str, exch: str | None, st: dict[str, Any], session: date, for_ingest: bool) -> Member:
    m = Member(sym, False, "", exch or st.get("exchange"), st.get("first"), st.get("close"), st.get("adv"),
               st.get("n", 0))
    return _explain(u, m, _verdict(u, m, st.get("delisted"), for_ingest), session, st.get("close_on"),
                    st.get("delisted"))


def resolve(u: Universe, session: date, *, path: Path | str, settings: Settings,
            con: duckdb.DuckDBPyConnection | None, for_ingest: bool = False, use_table: bool = True) -> Resolution:
    """``u``'s members on ``session``, each kept or dropped with the reason (module docstring):
    from the scans' membership table when it is current, else computed from the bars here."""
    found = candidates(u, path, settings, con)
    if use_table and not for_ingest and con is not None:
        res = _from_table(u, found, session, con)
        if res is not None:
            return res
    stats = _stats(con, session, u.adv_window)
    members = [_judge(u, sym, exch, stats.get(sym, {}), session, for_ingest) for sym, exch in sorted(found.items())]
    return Resolution(u.name, u.kind, session, members, for_ingest)


# ---- the dbt model (the scans' membership) -----------------------------------------------

MEMBERS_TABLE = "intermediate.int_universe_members"


def _hash(body: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _spec(u: Universe, found: dict[str, str | None] | None) -> dict[str, Any]:
    grouped: dict[str, list[str]] | None = None
    if found is not None:
        grouped = {}
        for sym, exch in sorted(found.items()):
            grouped.setdefault(exch or "", []).append(sym)
    body = {"name": u.name, "kind": u.kind, "candidates": grouped, "min_price": u.min_price,
            "min_avg_dollar_volume": u.min_avg_dollar_volume, "adv_window": u.adv_window,
            "exchanges": accepted_exchanges(u)}
    fp = _hash(body)
    # Alpaca's list is today's (it changes daily and is no history): a scan's rule is its filters
    return {**body, "fingerprint": fp, "rule": _hash({**body, "candidates": None}) if u.broker == "alpaca" else fp}


def dbt_spec(name: str, settings: Settings) -> dict[str, Any]:
    """What dbt needs to judge universe ``name`` on every session (int_universe_members.sql):
    its candidates grouped by the exchange the broker gives (``""``: none; ``None`` for a
    ``stored`` universe: every stored symbol), its filters, the exchange names it accepts,
    ``fingerprint`` (all of it: the model recomputes the universe when it changes) and ``rule``
    (what a scan's fingerprint includes: a change recomputes the scan's signals)."""
    path = settings.universes_file
    u = universe_named(name, path)
    return _spec(u, None if u.stored else candidates(u, path, settings, None))


def _has(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
                            [schema, name]).fetchone()[0])


def _newest_write(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest bar, corporate action or symbol row written: a table built before it is stale."""
    parts = [f"(SELECT max({col})::timestamp FROM raw.{t})" for t, col in
             (("bars_daily", "ingested_at"), ("bars_intraday", "ingested_at"), ("corporate_actions", "loaded_at"),
              ("symbols", "updated_at")) if _has(con, "raw", t)]
    return con.execute(f"SELECT greatest({', '.join(parts)})").fetchone()[0] if parts else None


def _from_table(u: Universe, found: dict[str, str | None], session: date,
                con: duckdb.DuckDBPyConnection) -> Resolution | None:
    """``u`` on ``session`` as the scans see it, or None when the table cannot say: not built,
    built from another spec of ``u`` (or none), or older than the newest data written. Each
    candidate's state on ``session`` is its row of the latest session on or before it (the rows
    sit on its bar sessions and its delisting's ex-date, where membership can change)."""
    if not _has(con, "intermediate", "int_universe_members"):
        return None
    fp = _spec(u, None if u.stored else found)["fingerprint"]
    built = con.execute(f"SELECT max(source_as_of) FROM {MEMBERS_TABLE} WHERE universe = ? AND universe_fingerprint = ?",
                        [u.name, fp]).fetchone()[0]
    newest = _newest_write(con)
    if built is None or (newest is not None and newest > built):
        return None
    rows = con.execute(
        f"SELECT symbol, dropped_by, exchange, first_session, last_close, close_on, avg_dollar_volume, "
        f"adv_sessions, delisted_on FROM {MEMBERS_TABLE} WHERE universe = ? AND universe_fingerprint = ? "
        "AND session_date <= ? QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY session_date DESC) = 1",
        [u.name, fp, session]).fetchall()
    latest = {r[0]: r for r in rows}
    members = []
    for sym, exch in sorted(found.items()):
        r = latest.get(sym)
        if r is None:  # no bar and no delisting on or before the session: judged with nothing stored
            members.append(_judge(u, sym, exch, {}, session, False))
            continue
        m = Member(sym, False, "", r[2], r[3], r[4], r[6], r[7] or 0)
        members.append(_explain(u, m, r[1], session, r[5], r[8]))
    return Resolution(u.name, u.kind, session, members, False, basis=MEMBERS_TABLE)


# ---- with the settings' warehouse --------------------------------------------------------


def _open(settings: Settings) -> duckdb.DuckDBPyConnection | None:
    from trading_pipeline.marketdata import warehouse

    if not warehouse.exists(settings.warehouse_path):
        return None
    return warehouse.connect(settings.warehouse_path, read_only=True)


def latest_session(con: duckdb.DuckDBPyConnection | None) -> date:
    """The newest session with bars (the one a scan just loaded), else today in New York."""
    if con is not None and _has_table(con, "bars_daily"):
        row = con.execute("SELECT max(d) FROM (SELECT max(session_date) d FROM raw.bars_daily "
                          "UNION ALL SELECT max(session_date) FROM raw.bars_intraday)").fetchone()
        if row and row[0] is not None:
            return row[0]
    return datetime.now(NEW_YORK).date()


def resolve_named(name: str, settings: Settings, session: date | None = None, *,
                  for_ingest: bool = False) -> Resolution:
    """Resolve the universe ``name`` of ``TRADING_UNIVERSES_FILE`` on ``session`` (default: the newest
    stored session) against the settings' warehouse."""
    path = settings.universes_file
    u = universe_named(name, path)
    con = _open(settings)
    try:
        day = session or latest_session(con)
        return resolve(u, day, path=path, settings=settings, con=con, for_ingest=for_ingest)
    finally:
        if con is not None:
            con.close()


def scheduled_symbols(settings: Settings, source: str | None, session: str) -> tuple[list[str] | None, str | None]:
    """What a scheduled ingest of ``session`` from ``source`` fetches: (None, None) for a source that
    has its own universe; (symbols, None) from ``TRADING_UNIVERSE``; (None, why) when it must skip."""
    if source not in NEEDS_SYMBOLS:
        return None, None
    if not settings.universe:
        return None, (f"the {source} source needs explicit symbols and TRADING_UNIVERSE is not set: name a universe "
                      f"of {settings.universes_file} in TRADING_UNIVERSE (see universes.example.yaml; "
                      "`trading universe list`)")
    try:
        res = resolve_named(settings.universe, settings, date.fromisoformat(session), for_ingest=True)
    except UniverseError as exc:
        return None, f"TRADING_UNIVERSE={settings.universe}: {exc}"
    if not res.symbols:
        return None, f"TRADING_UNIVERSE={settings.universe}: {res.empty_message(settings.universes_file)}"
    return res.symbols, None
