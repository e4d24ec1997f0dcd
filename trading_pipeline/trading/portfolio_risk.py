"""Portfolio risk from daily closes and today's positions: historical VaR and expected shortfall,
exposure, beta to a benchmark, and stress scenarios (historical windows replayed, hypothetical shocks).

Pure (numpy + polars): the callers (``trading risk``, ``GET /risk/assessment``, the
``marts/portfolio_risk`` asset) load the closes (:func:`load_closes`, from the warehouse or
the serving snapshot) and the positions (the ops store) and pass them in.

Definitions (README "Portfolio risk" has the same words):

- **Price** of a position: its symbol's last daily close. Market value ``q x price`` (``q``
  signed: a short is negative).
- **Returns**: simple close-to-close, ``r_t = close_t / close_(t-1) - 1``, on the *common
  sessions*: the sessions where every held symbol has a close (no forward fill; a session one
  symbol lacks is left out for all, and the next return spans the gap). The window is the last
  ``window`` such returns (``window + 1`` common closes); fewer is an :class:`InsufficientHistory`
  error naming each symbol and how many sessions it has.
- **P&L series**: position ``i`` on day ``t``: ``q_i x price_i x r_i,t`` (today's holdings
  through each past day); the portfolio's: the sum over positions on the same day.
- **VaR at level a** (0.95, 0.99), a positive number for a loss: with the P&L sorted from
  the worst, ``k = ceil(n x (1 - a))`` (n = window), ``VaR = -(k-th worst P&L)`` (numpy's
  ``-quantile(pnl, 1 - a, method="inverted_cdf")``) and ``ES = -(mean of the k worst P&Ls)``.
  Not floored: a negative VaR means even the tail day gained. The total is from the portfolio's
  P&L series (diversification counts), never a sum of position VaRs.
- **N-day**: the 1-day figure x sqrt(N) (i.i.d. returns, zero mean); no overlapping windows.
- **Exposure**: long = sum of positive market values, short = sum of |negative| ones, gross =
  long + short, net = long - short; weight = market value / equity (cash + net).
- **Beta** of a symbol: ``cov(r_i, r_b) / var(r_b)`` (sample, ddof 1) over the window's
  returns where the benchmark has closes on both ends; the portfolio's ``beta_dollars`` =
  ``cov(P&L, r_b) / var(r_b)`` (= sum of ``market value x beta``) and ``beta`` = that / equity.
  A benchmark without bars: betas are None, and stress falls back to nothing (see below).
- **Historical stress** on today's positions: a symbol's return over ``start..end`` is
  ``close(last session <= end) / close(last session < start) - 1`` when its bars cover the window
  (a session before ``start`` and one on or after ``end``): source ``own``; else the benchmark's
  return over the window x the symbol's beta (``benchmark_beta``), or x 1 without a beta
  (``benchmark``); else ``none``: the scenario's P&L is None (``status: no data``) and it lists them.
- **Hypothetical shocks** (a scenarios YAML file, :func:`load_scenarios`): a symbol's own key,
  else ``benchmark`` (x its beta), else ``all``, else 0. P&L = sum of ``q x price x shock``.
  Every scenario names its worst position (the lowest P&L).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

LEVELS = (0.95, 0.99)
DEFAULT_WINDOW = 250
DEFAULT_HORIZON = 10
BENCHMARK_CANDIDATES = ("SPY", "GOOG")  # the benchmark when none is set: the first with bars


class RiskInputError(ValueError):
    """Risk cannot be computed from what was given."""


class InsufficientHistory(RiskInputError):
    """Fewer common sessions than the window needs; ``sessions`` maps each symbol to its count."""

    def __init__(self, message: str, sessions: Mapping[str, int]) -> None:
        super().__init__(message)
        self.sessions = dict(sessions)


class ScenarioFileError(ValueError):
    """A scenarios file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class HistoricalWindow:
    name: str
    start: date
    end: date


@dataclass(frozen=True)
class Shock:
    """A hypothetical scenario: fractional moves by symbol, ``all`` and/or ``benchmark``."""

    name: str
    shocks: Mapping[str, float]


DEFAULT_WINDOWS = (
    HistoricalWindow("2008 Lehman", date(2008, 9, 15), date(2008, 10, 10)),
    HistoricalWindow("2020 Covid crash", date(2020, 2, 20), date(2020, 3, 23)),
    HistoricalWindow("2022 drawdown", date(2022, 1, 3), date(2022, 10, 12)),
)


@dataclass(frozen=True)
class RiskConfig:
    window: int = DEFAULT_WINDOW
    horizon: int = DEFAULT_HORIZON
    benchmark: str | None = None  # resolved: a symbol with bars, or None
    historical: Sequence[HistoricalWindow] = DEFAULT_WINDOWS
    hypothetical: Sequence[Shock] = ()

    def __post_init__(self) -> None:
        if self.window < 2:
            raise RiskInputError(f"window must be at least 2 sessions, got {self.window}")
        if self.horizon < 1:
            raise RiskInputError(f"horizon must be at least 1 day, got {self.horizon}")


# ---- the statistics ---------------------------------------------------------------------------

def tail_count(n: int, level: float) -> int:
    """How many worst days make the tail at ``level``: ``ceil(n x (1 - level))`` (at least 1)."""
    return max(1, math.ceil(round(n * (1 - level), 9)))


def var_es(pnl: Sequence[float] | np.ndarray, level: float) -> tuple[float, float]:
    """Historical (VaR, ES) at ``level`` of a P&L series, both positive for a loss."""
    x = np.sort(np.asarray(pnl, dtype=float))
    if x.size == 0:
        return 0.0, 0.0
    k = tail_count(x.size, level)
    return float(-x[k - 1]), float(-x[:k].mean())


def scale(value: float | None, horizon: int) -> float | None:
    """A 1-day figure at ``horizon`` days: x sqrt(horizon)."""
    return None if value is None else value * math.sqrt(horizon)


def beta(r: np.ndarray, rb: np.ndarray) -> float | None:
    """``cov(r, rb) / var(rb)`` over the pairs where both are known (None: < 2 pairs or flat rb)."""
    ok = ~(np.isnan(r) | np.isnan(rb))
    if ok.sum() < 2:
        return None
    v = np.var(rb[ok], ddof=1)
    if v == 0:
        return None
    return float(np.cov(r[ok], rb[ok], ddof=1)[0, 1] / v)


def _figures(pnl: np.ndarray, horizon: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nd: dict[str, Any] = {"days": horizon}
    for level in LEVELS:
        v, e = var_es(pnl, level)
        tag = str(round(level * 100))
        out[f"var_{tag}"], out[f"es_{tag}"] = v, e
        nd[f"var_{tag}"], nd[f"es_{tag}"] = scale(v, horizon), scale(e, horizon)
    out["horizon"] = nd
    return out


# ---- data -------------------------------------------------------------------------------------

def load_closes(con: Any, symbols: Iterable[str], as_of: date | str | None = None) -> pl.DataFrame:
    """Daily closes (symbol, session_date, close) of ``symbols`` from a DuckDB connection holding
    ``raw.bars_daily`` (the warehouse, or the API's serving snapshot), up to session ``as_of``."""
    symbols = sorted(set(symbols))
    empty = pl.DataFrame(schema={"symbol": pl.String, "session_date": pl.Date, "close": pl.Float64})
    if not symbols:
        return empty
    sql = ("SELECT symbol, session_date, close FROM raw.bars_daily WHERE timeframe = '1d' "
           "AND symbol IN (SELECT unnest(?::VARCHAR[]))")
    params: list[Any] = [symbols]
    if as_of is not None:
        sql += " AND session_date <= ?::DATE"
        params.append(str(as_of))
    rel = con.execute(sql + " ORDER BY symbol, session_date", params)
    rows = rel.fetchall()
    if not rows:
        return empty
    return pl.DataFrame(rows, schema=empty.schema, orient="row")


def choose_benchmark(setting: str | None, have_bars: Iterable[str]) -> tuple[str | None, str | None]:
    """(benchmark symbol or None, a note when there is none). ``setting`` empty: the first of
    SPY, GOOG that has bars."""
    have = set(have_bars)
    if setting:
        sym = setting.upper()
        if sym in have:
            return sym, None
        return None, f"benchmark {sym} has no daily bars: no betas, and stress windows use only symbols' own bars"
    for sym in BENCHMARK_CANDIDATES:
        if sym in have:
            return sym, None
    return None, (f"no benchmark: none set (TRADING_RISK_BENCHMARK) and none of {', '.join(BENCHMARK_CANDIDATES)} "
                  "has bars: no betas, and stress windows use only symbols' own bars")


# ---- scenarios file ---------------------------------------------------------------------------

def _fraction(value: Any, where: str) -> float:
    """``-10%`` (a string with %) or a fraction (``-0.1``) as a fraction; at least -100%."""
    if isinstance(value, bool):
        raise ScenarioFileError(f"{where}: expected a move like -10% or -0.1, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            x = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ScenarioFileError(f"{where}: expected a move like -10% or -0.1, got {value!r}") from None
    elif isinstance(value, int | float):
        x = float(value)
    else:
        raise ScenarioFileError(f"{where}: expected a move like -10% or -0.1, got {value!r}")
    if not math.isfinite(x) or x < -1:
        raise ScenarioFileError(f"{where}: {value!r} is not a finite move of at least -100%")
    return x


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ScenarioFileError(f"{where}: expected a date YYYY-MM-DD, got {value!r}") from None


def parse_scenarios(data: Any, source: str = "<scenarios>") -> tuple[list[HistoricalWindow] | None, list[Shock]]:
    """(historical windows, or None for the defaults; hypothetical shocks) from the parsed YAML."""
    if data is None:
        return None, []
    if not isinstance(data, dict):
        raise ScenarioFileError(f"{source}: expected a mapping with 'historical' and/or 'hypothetical', "
                                f"got {type(data).__name__}")
    extra = set(data) - {"historical", "hypothetical"}
    if extra:
        raise ScenarioFileError(f"{source}: unknown key(s) {', '.join(sorted(map(str, extra)))}; "
                                "expected 'historical' and/or 'hypothetical'")
    historical: list[HistoricalWindow] | None = None
    if "historical" in data:
        historical = []
        items = data["historical"] or []
        if not isinstance(items, list):
            raise ScenarioFileError(f"{source}: historical: expected a list of {{name, start, end}}")
        for i, item in enumerate(items):
            where = f"{source}: historical[{i}]"
            if not isinstance(item, dict) or set(item) != {"name", "start", "end"}:
                raise ScenarioFileError(f"{where}: expected exactly the keys name, start, end, got {item!r}")
            start, end = _date(item["start"], f"{where}.start"), _date(item["end"], f"{where}.end")
            if end < start:
                raise ScenarioFileError(f"{where}.end: {end} is before start {start}")
            historical.append(HistoricalWindow(str(item["name"]), start, end))
    shocks: list[Shock] = []
    items = data.get("hypothetical") or []
    if not isinstance(items, list):
        raise ScenarioFileError(f"{source}: hypothetical: expected a list of {{name, shocks}}")
    for i, item in enumerate(items):
        where = f"{source}: hypothetical[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "shocks"}:
            raise ScenarioFileError(f"{where}: expected exactly the keys name, shocks, got {item!r}")
        raw = item["shocks"]
        if not isinstance(raw, dict) or not raw:
            raise ScenarioFileError(f"{where}.shocks: expected a mapping like {{all: -10%, GOOG: -30%}}, got {raw!r}")
        moves = {}
        for key, value in raw.items():
            k = str(key)
            name = k.lower() if k.lower() in ("all", "benchmark") else k.upper()
            moves[name] = _fraction(value, f"{where}.shocks.{k}")
        shocks.append(Shock(str(item["name"]), moves))
    return historical, shocks


def load_scenarios(path: Path | str | None) -> tuple[list[HistoricalWindow] | None, list[Shock]]:
    """The scenarios file (see scenarios.example.yaml); None: the default windows, no shocks."""
    if path is None or str(path) == "":
        return None, []
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioFileError(f"{path}: cannot read the scenarios file ({exc.strerror or exc}); "
                                "TRADING_SCENARIOS_FILE names it") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioFileError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenarios(data, str(path))


# ---- the assessment ---------------------------------------------------------------------------

@dataclass
class _Panel:
    symbols: list[str]
    dates: list[date]          # the window's return dates (the later session of each pair)
    returns: np.ndarray        # (n, len(symbols))
    bench: np.ndarray | None   # (n,), NaN where the benchmark lacks a close


@dataclass
class _Series:
    """One symbol's closes in session order (numpy: ``dates`` as datetime64[D])."""

    dates: np.ndarray
    closes: np.ndarray


def _series(closes: pl.DataFrame) -> dict[str, _Series]:
    out = {}
    for (sym,), g in closes.sort("symbol", "session_date").partition_by("symbol", as_dict=True).items():
        out[str(sym)] = _Series(g["session_date"].to_numpy().astype("datetime64[D]"), g["close"].to_numpy().astype(float))
    return out


def _panel(series: Mapping[str, _Series], held: list[str], benchmark: str | None, window: int) -> _Panel:
    """The window's returns on the common sessions (numpy: a pivot of 500 symbols x 10 years in polars
    takes seconds)."""
    wanted = [*held, *([benchmark] if benchmark and benchmark not in held and benchmark in series else [])]
    days = np.unique(np.concatenate([series[s].dates for s in wanted]))
    wide = np.full((days.size, len(wanted)), np.nan)
    for j, s in enumerate(wanted):
        wide[np.searchsorted(days, series[s].dates), j] = series[s].closes
    common = ~np.isnan(wide[:, : len(held)]).any(axis=1)
    n_common = int(common.sum())
    if n_common < window + 1:
        have = ", ".join(f"{s} {series[s].dates.size}" for s in held)
        raise InsufficientHistory(
            f"not enough history for a {window}-session window: it needs {window + 1} sessions where every held "
            f"symbol has a close, there are {n_common} (sessions per symbol: {have})",
            {s: int(series[s].dates.size) for s in held})
    rows = wide[common][-(window + 1):]
    px = rows[:, : len(held)]
    rets = px[1:] / px[:-1] - 1
    bench = None
    if benchmark and benchmark in series:
        b = rows[:, wanted.index(benchmark)]
        bench = b[1:] / b[:-1] - 1  # NaN where the benchmark lacks a close
    dates = [d.item() for d in days[common][-(window + 1):][1:]]
    return _Panel(held, dates, rets, bench)


def _window_return(s: _Series | None, w: HistoricalWindow) -> float | None:
    """close(last session <= end) / close(last session < start) - 1, if the bars cover the window."""
    if s is None or s.dates.size == 0:
        return None
    start, end = np.datetime64(w.start, "D"), np.datetime64(w.end, "D")
    if not (s.dates[0] < start and s.dates[-1] >= end):
        return None
    base = s.closes[np.searchsorted(s.dates, start, side="left") - 1]
    last = s.closes[np.searchsorted(s.dates, end, side="right") - 1]
    return float(last) / float(base) - 1


def _scenario(name: str, kind: str, moves: dict[str, tuple[float | None, str]],
              values: Mapping[str, float], equity: float, extra: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for sym in sorted(values):
        r, source = moves[sym]
        rows.append({"symbol": sym, "return": r, "source": source,
                     "pnl": None if r is None else values[sym] * r})
    known = [p for p in rows if p["pnl"] is not None]
    missing = [p["symbol"] for p in rows if p["pnl"] is None]
    pnl = None if missing else float(sum(p["pnl"] for p in known))
    worst = min(known, key=lambda p: (p["pnl"], p["symbol"])) if known else None
    sources: dict[str, list[str]] = {}
    for p in rows:
        sources.setdefault(p["source"], []).append(p["symbol"])
    return {
        "name": name, "kind": kind, **extra,
        "status": "no data" if missing else "ok",
        "pnl": pnl, "pnl_pct": None if pnl is None or equity <= 0 else pnl / equity * 100,
        "worst_symbol": worst["symbol"] if worst else None, "worst_pnl": worst["pnl"] if worst else None,
        "no_data": missing, "sources": sources, "positions": rows,
    }


def assess(positions: Mapping[str, float], closes: pl.DataFrame, *, cash: float = 0.0,
           config: RiskConfig | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The risk report of one portfolio: ``positions`` symbol -> signed quantity, ``closes`` as
    :func:`load_closes` gives (the held symbols' and the benchmark's). See the module's definitions."""
    config = config or RiskConfig()
    held = sorted(s for s, q in positions.items() if q)
    series = _series(closes) if closes.height else {}
    prices = {s: float(series[s].closes[-1]) for s in held if s in series}
    unpriced = [s for s in held if s not in prices]
    if unpriced:
        raise InsufficientHistory(f"no daily bars for {', '.join(unpriced)}: cannot price or measure them",
                                  {s: (int(series[s].dates.size) if s in series else 0) for s in held})
    values = {s: float(positions[s]) * prices[s] for s in held}
    long_ = sum(v for v in values.values() if v > 0)
    short = -sum(v for v in values.values() if v < 0)
    equity = float(cash) + long_ - short
    bench = config.benchmark
    out: dict[str, Any] = {
        "as_of": None, "window": config.window, "sessions": 0, "horizon_days": config.horizon,
        "cash": float(cash), "equity": equity, "benchmark": bench,
        "exposure": {"long": long_, "short": short, "gross": long_ + short, "net": long_ - short},
        "notes": list(notes),
    }
    if not held:
        out.update(_figures(np.zeros(0), config.horizon), beta=None, beta_dollars=None, positions=[])
        out["notes"].append("no open positions: every figure is 0")
    else:
        panel = _panel(series, held, bench, config.window)
        pnl_by = panel.returns * np.array([values[s] for s in held])
        total = pnl_by.sum(axis=1)
        out.update(as_of=panel.dates[-1], sessions=len(panel.dates), **_figures(total, config.horizon))
        betas = {s: (beta(panel.returns[:, i], panel.bench) if panel.bench is not None else None)
                 for i, s in enumerate(held)}
        bd = beta(total, panel.bench) if panel.bench is not None else None
        out.update(beta_dollars=bd, beta=None if bd is None or equity <= 0 else bd / equity)
        out["positions"] = [{
            "symbol": s, "quantity": float(positions[s]), "price": prices[s], "market_value": values[s],
            "weight": None if equity <= 0 else values[s] / equity, "beta": betas[s],
            **_figures(pnl_by[:, i], config.horizon)} for i, s in enumerate(held)]
    out["exposure"]["by_symbol"] = [
        {"symbol": s, "market_value": values[s], "weight": None if equity <= 0 else values[s] / equity} for s in held]
    betas = {p["symbol"]: p["beta"] for p in out["positions"]}
    scenarios = []
    for w in config.historical:
        rb = _window_return(series.get(bench), w) if bench else None
        moves: dict[str, tuple[float | None, str]] = {}
        for s in held:
            own = _window_return(series.get(s), w)
            if own is not None:
                moves[s] = (own, "own")
            elif rb is not None and betas.get(s) is not None:
                moves[s] = (rb * betas[s], "benchmark_beta")
            elif rb is not None:
                moves[s] = (rb, "benchmark")
            else:
                moves[s] = (None, "none")
        scenarios.append(_scenario(w.name, "historical", moves, values, equity,
                                   {"start": w.start, "end": w.end, "benchmark_return": rb}))
    for sh in config.hypothetical:
        moves = {}
        for s in held:
            if s in sh.shocks:
                moves[s] = (sh.shocks[s], "symbol")
            elif "benchmark" in sh.shocks:
                b = betas.get(s)
                moves[s] = (sh.shocks["benchmark"] * (1.0 if b is None else b),
                            "benchmark" if b is None else "benchmark_beta")
            elif "all" in sh.shocks:
                moves[s] = (sh.shocks["all"], "all")
            else:
                moves[s] = (0.0, "unshocked")
        scenarios.append(_scenario(sh.name, "hypothetical", moves, values, equity, {"shocks": dict(sh.shocks)}))
    out["scenarios"] = scenarios
    return out


@dataclass
class Book:
    """One account's holdings as risk needs them."""

    account: str
    positions: dict[str, float] = field(default_factory=dict)
    cash: float = 0.0


def book_of(portfolio: Any) -> Book:
    """A :class:`~trading_pipeline.trading.positions.Portfolio` as a :class:`Book`."""
    return Book(portfolio.account, {p.symbol: float(p.quantity) for p in portfolio.open_positions()},
                float(portfolio.cash or 0))


def combined(books: Sequence[Book], name: str = "total") -> Book:
    """Every account's positions netted by symbol, and their cash summed: the total's portfolio."""
    pos: dict[str, float] = {}
    for b in books:
        for s, q in b.positions.items():
            pos[s] = pos.get(s, 0.0) + q
    return Book(name, {s: q for s, q in pos.items() if q}, sum(b.cash for b in books))


def report(books: Sequence[Book], closes: pl.DataFrame, config: RiskConfig,
           notes: Sequence[str] = ()) -> dict[str, Any]:
    """Each account's assessment and the total's (all accounts as one portfolio). An account that
    cannot be assessed has ``error`` (and ``sessions_by_symbol`` for missing history)."""

    def one(b: Book) -> dict[str, Any]:
        try:
            return {"account": b.account, **assess(b.positions, closes, cash=b.cash, config=config, notes=notes)}
        except InsufficientHistory as exc:
            return {"account": b.account, "error": str(exc), "sessions_by_symbol": exc.sessions}

    return {"accounts": [one(b) for b in books], "total": one(combined(books))}


def symbols_needed(books: Sequence[Book]) -> list[str]:
    return sorted({s for b in books for s, q in b.positions.items() if q})


def symbols_with_bars(con: Any, symbols: Iterable[str]) -> set[str]:
    symbols = sorted(set(symbols))
    if not symbols:
        return set()
    rows = con.execute("SELECT DISTINCT symbol FROM raw.bars_daily WHERE timeframe = '1d' "
                       "AND symbol IN (SELECT unnest(?::VARCHAR[]))", [symbols]).fetchall()
    return {r[0] for r in rows}


def assess_books(con: Any, books: Sequence[Book], *, window: int = DEFAULT_WINDOW, horizon: int = DEFAULT_HORIZON,
                 benchmark: str | None = None, scenarios_file: Path | str | None = None,
                 as_of: date | str | None = None) -> dict[str, Any]:
    """:func:`report` of ``books`` with closes read from ``con`` (a DuckDB connection with
    ``raw.bars_daily``) up to ``as_of``; the benchmark chosen by :func:`choose_benchmark`, the
    scenarios from ``scenarios_file`` (:func:`load_scenarios`: a bad file raises first)."""
    historical, shocks = load_scenarios(scenarios_file)
    candidates = [benchmark] if benchmark else list(BENCHMARK_CANDIDATES)
    bench, note = choose_benchmark(benchmark, symbols_with_bars(con, [c.upper() for c in candidates]))
    config = RiskConfig(window=window, horizon=horizon, benchmark=bench,
                        historical=DEFAULT_WINDOWS if historical is None else historical, hypothetical=shocks)
    closes = load_closes(con, [*symbols_needed(books), *([bench] if bench else [])], as_of=as_of)
    out = report(books, closes, config, notes=[note] if note else [])
    return {"window": window, "horizon_days": horizon, "benchmark": bench,
            "scenarios_file": str(scenarios_file) if scenarios_file else None, **out}
