"""Scan rules: rules.yaml, validated, and turned into the dbt vars the signal models read.

The signal definitions themselves live in dbt (``dbt_project/macros/signals.sql``); this
module only checks the file and hands its numbers to dbt, so a threshold change in
rules.yaml changes the next build's signals without code changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading_pipeline.marketdata.bars import INTRADAY_TIMEFRAMES
from trading_pipeline.scans.expressions import ExprError, compile_scan

Kind = Literal["breakout", "crp", "cpr", "expr"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "breakout": {"lookback": 20, "volume_multiple": 1.5, "min_score": 0.0},
    # CRP defaults for a US equities universe (issue 21.5): volume scored relative to the
    # symbol's own average of the previous 20 bars (current bar excluded); bars with no volume
    # (indices) get the neutral volume part and skip every volume filter; an absolute
    # liquidity floor on the average dollar volume, no upper cap; stocks from $5 up; a
    # min_score that needs more than one strong part (README "CRP" has the sample figures).
    "crp": {
        "min_score": 60.0,
        "price_band": (5.0, None),
        "min_avg_dollar_volume": 5_000_000.0,
        "rvol_lookback": 20,
        "rvol_tiers": (2.0, 1.5, 1.0),
        "close_within": 0.02,
        "range_tiers": (0.03, 0.045),
        "change_tiers": (0.01, 0.0),
        "top_n": 3,
        "cutoff": time(10, 30),
    },
    "cpr": {"lookback": 20, "min_score": 0.0},
    # expr: min_score filters the score only when given (a score may be negative)
    "expr": {},
}
# intraday CRP compares the session's window from the open to the cutoff (10:30: about a
# fifth of a day's volume), so its floor is lower than the daily $5M
INTRADAY_CRP_MIN_AVG_DOLLAR_VOLUME = 1_000_000.0
ALLOWED_PARAMS: dict[str, set[str]] = {
    "breakout": {"lookback", "volume_multiple", "min_score", "bar_timeframes"},
    "crp": {"min_score", "price_band", "volume_band", "min_avg_dollar_volume", "rvol_lookback", "rvol_tiers",
            "close_within", "range_tiers", "change_tiers", "top_n", "cutoff", "bar_timeframes"},
    "cpr": {"lookback", "min_score", "bar_timeframes"},
    "expr": {"min_score", "bar_timeframes"},
}


UNIVERSE_NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
# the symbol list of a named universe with no candidates: matches no symbol (an empty list
# would mean every symbol to the signal macros)
NO_SYMBOLS = "(empty universe)"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, scan and field."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lookback: int | None = Field(default=None, ge=2, le=5000)
    volume_multiple: float | None = Field(default=None, gt=0)
    min_score: float | None = None
    price_band: tuple[float, float | None] | None = None
    volume_band: tuple[float, float | None] | None = None
    # crp: relative volume rvol = volume / average volume of the previous rvol_lookback bars
    # (intraday: sessions); at or above each of rvol_tiers it earns 1.0, 0.75, 0.5 of the
    # volume part, below the last 0.25
    rvol_lookback: int | None = Field(default=None, ge=1, le=500)
    rvol_tiers: tuple[float, float, float] | None = None
    # crp: average dollar volume (close x volume) of the same previous bars must reach this;
    # 0 = no floor. Bars with no volume data (indices) are exempt.
    min_avg_dollar_volume: float | None = Field(default=None, ge=0)
    # crp: close within this fraction of the range from the high (long) / low (short) -> 1.0
    close_within: float | None = Field(default=None, ge=0, le=1)
    # crp: (H-L)/C <= range_tiers[0] -> 1.0, <= [1] -> 0.67, else 0.17
    range_tiers: tuple[float, float] | None = None
    # crp: (C-O)/O > change_tiers[0] -> 1.0, > [1] -> 0.5, else 0.2 (mirrored for shorts)
    change_tiers: tuple[float, float] | None = None
    top_n: int | None = Field(default=None, ge=1)
    cutoff: time | None = None
    bar_timeframes: list[Literal[INTRADAY_TIMEFRAMES]] | None = None  # type: ignore[valid-type]

    @field_validator("price_band", "volume_band")
    @classmethod
    def _band(cls, v: tuple[float, float | None] | None) -> tuple[float, float | None] | None:
        if v is not None and not (0 <= v[0] and (v[1] is None or v[0] <= v[1])):
            raise ValueError(f"must be [low, high] with 0 <= low <= high (high may be null: no cap), got {list(v)}")
        return v

    @field_validator("rvol_tiers")
    @classmethod
    def _tiers(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and not (v[0] >= v[1] >= v[2] > 0):
            raise ValueError(f"must be three falling relative volumes, e.g. [2.0, 1.5, 1.0], got {list(v)}")
        return v

    @field_validator("range_tiers", "change_tiers")
    @classmethod
    def _two_tiers(cls, v: tuple[float, float] | None, info) -> tuple[float, float] | None:
        if v is None:
            return v
        if info.field_name == "range_tiers" and not (0 < v[0] <= v[1]):
            raise ValueError(f"must be two rising ranges (H-L)/C, e.g. [0.03, 0.045], got {list(v)}")
        if info.field_name == "change_tiers" and not (v[0] >= v[1] >= 0):
            raise ValueError(f"must be two falling changes (C-O)/O, e.g. [0.01, 0.0], got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # the absolute volume tiers (25k/50k/75k shares) were replaced by relative volume
        if isinstance(data, dict) and "volume_tiers" in data:
            raise ValueError(
                "volume_tiers is no longer used: the CRP volume part is scored on relative volume, "
                "set rvol_tiers (e.g. [2.0, 1.5, 1.0]) and rvol_lookback instead; for an absolute "
                "liquidity floor use min_avg_dollar_volume or volume_band"
            )
        return data


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_price: float | None = Field(default=None, ge=0)
    max_price: float | None = Field(default=None, ge=0)
    min_volume: float | None = Field(default=None, ge=0)
    max_volume: float | None = Field(default=None, ge=0)


class Scan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)
    kind: Kind
    timeframe: Literal["daily", "intraday"]
    # "all", a list of symbols, or the name of a universe in TRADING_UNIVERSES_FILE (resolved
    # point in time for the session scanned: marketdata/universes.py)
    universe: Literal["all"] | list[str] | str = "all"
    params: Params = Field(default_factory=Params)
    filters: Filters = Field(default_factory=Filters)
    # kind expr only (scans/expressions.py): a condition, a numeric score (default 1), a side
    when: str | None = None
    score: str | None = None
    direction: Literal["long", "short"] | None = None
    alert_min_score: float | None = None
    enabled: bool = True
    # whether the order job turns this scan's signals into orders (None: daily scans do,
    # intraday scans do not, as before the setting existed). An order setting, not a signal
    # rule: it is not in resolved(), so it changes neither dbt's vars nor the fingerprint.
    trade: bool | None = None

    @field_validator("universe")
    @classmethod
    def _universe(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("must be 'all' or a non-empty list of symbols")
            bad = [s for s in v if not s or "'" in s]
            if bad:
                raise ValueError(f"invalid symbol(s) {bad}")
        elif v != "all" and not re.match(UNIVERSE_NAME, v):
            raise ValueError(f"must be 'all', a list of symbols or a universe name (letters, digits, _ -), got {v!r}")
        return v

    @property
    def trades(self) -> bool:
        """Whether its signals become orders: ``trade`` when set, else daily scans only."""
        return self.timeframe == "daily" if self.trade is None else self.trade

    @property
    def universe_name(self) -> str | None:
        """The named universe this scan covers (None for 'all' or a list)."""
        return self.universe if isinstance(self.universe, str) and self.universe != "all" else None

    @model_validator(mode="after")
    def _kind_params(self) -> Scan:
        given = {k for k in self.params.model_fields_set}
        extra = given - ALLOWED_PARAMS[self.kind]
        if extra:
            raise ValueError(
                f"params {sorted(extra)} do not apply to kind {self.kind!r} "
                f"(allowed: {', '.join(sorted(ALLOWED_PARAMS[self.kind]))})"
            )
        if self.timeframe == "daily" and self.params.bar_timeframes:
            raise ValueError("params.bar_timeframes only applies to intraday scans")
        defaults = dict(DEFAULTS[self.kind])
        if self.kind == "crp" and self.timeframe == "intraday":
            defaults["min_avg_dollar_volume"] = INTRADAY_CRP_MIN_AVG_DOLLAR_VOLUME
        for key, value in defaults.items():
            if getattr(self.params, key) is None:
                setattr(self.params, key, value)
        return self

    @field_validator("when", "score", mode="before")
    @classmethod
    def _expr_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _expr(self) -> Scan:
        given = [f for f in ("when", "score", "direction") if getattr(self, f) is not None]
        if self.kind != "expr":
            if given:
                raise ValueError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} only for kind 'expr' "
                                 f"(this scan is kind {self.kind!r})")
            return self
        if self.when is None:
            raise ValueError("when is required for kind 'expr': a condition, e.g. rsi_14 < 30 and close > sma_200")
        try:
            compile_scan(self.when, self.score)
        except ExprError as exc:
            raise ValueError(str(exc)) from None
        if self.direction is None:
            self.direction = "long"
        return self

    def resolved(self) -> dict[str, Any]:
        """Parameters with defaults applied, as plain JSON-able values."""
        p = self.params
        timeframes = (
            ["1d"] if self.timeframe == "daily" else list(p.bar_timeframes or INTRADAY_TIMEFRAMES)
        )
        lo_price, hi_price = p.price_band or (None, None)
        lo_vol, hi_vol = p.volume_band or (None, None)
        f = self.filters
        return {
            "name": self.name,
            "kind": self.kind,
            "timeframes": timeframes,
            "symbols": None if self.universe == "all" or self.universe_name else list(self.universe),
            # a named universe's symbols change by session: the name, not the list, is the rule
            **({"universe": self.universe_name} if self.universe_name else {}),
            "lookback": p.lookback if self.kind in ("breakout", "cpr") else None,
            "volume_multiple": p.volume_multiple if self.kind == "breakout" else None,
            "min_score": float(p.min_score or 0.0),
            "min_price": _tighter(lo_price, f.min_price, max),
            "max_price": _tighter(hi_price, f.max_price, min),
            "min_volume": _tighter(lo_vol, f.min_volume, max),
            "max_volume": _tighter(hi_vol, f.max_volume, min),
            "top_n": p.top_n if self.kind == "crp" else None,
            # crp only (a key on every scan would change the others' fingerprints for nothing)
            **(
                {
                    "min_avg_dollar_volume": float(p.min_avg_dollar_volume or 0.0),
                    "rvol_lookback": p.rvol_lookback,
                    "rvol_tiers": list(p.rvol_tiers),
                    "close_within": p.close_within,
                    "range_tiers": list(p.range_tiers),
                    "change_tiers": list(p.change_tiers),
                }
                if self.kind == "crp"
                else {}
            ),
            **(self._expr_resolved() if self.kind == "expr" else {}),
            "cutoff": p.cutoff.strftime("%H:%M:%S")
            if self.kind == "crp" and self.timeframe == "intraday"
            else None,
            "alert_min_score": self.alert_min_score,
        }

    def _expr_resolved(self) -> dict[str, Any]:
        """kind expr's keys (only on expr scans: the other kinds' fingerprints stay as they were)."""
        c = compile_scan(self.when or "", self.score)
        return {"min_score": self.params.min_score, "when": " ".join((self.when or "").split()),
                "score": " ".join(self.score.split()) if self.score else None, "direction": self.direction,
                "when_sql": c.when_sql, "score_sql": c.score_sql, "expr_layers": c.layers,
                "expr_lookback": c.lookback}


def _tighter(a: float | None, b: float | None, pick) -> float | None:
    vals = [float(x) for x in (a, b) if x is not None]
    return pick(vals) if vals else None


class RebalanceRule(BaseModel):
    """``rebalance:`` in the rules file: the targets `trading rebalance` and the ``rebalance`` job
    use when given none: equal weight over the ``top`` highest-scoring long signals of
    ``from_scan``'s latest session."""

    model_config = ConfigDict(extra="forbid")

    from_scan: str
    top: int = Field(default=5, ge=1, le=500)


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scans: list[Scan] = Field(default_factory=list)
    rebalance: RebalanceRule | None = None

    @property
    def enabled_scans(self) -> list[Scan]:
        return [s for s in self.scans if s.enabled]


def _num(x: Any) -> Any:
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _describe(err: dict[str, Any]) -> str:
    ctx = {k: _num(v) for k, v in (err.get("ctx") or {}).items()}
    typ = err["type"]
    got = err.get("input")
    if typ == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {got!r}"
    if typ == "greater_than":
        return f"must be > {ctx['gt']}, got {got!r}"
    if typ == "less_than_equal":
        return f"must be <= {ctx['le']}, got {got!r}"
    if typ == "extra_forbidden":
        return "is not a known field"
    if typ == "missing":
        return "is required"
    msg = err["msg"].removeprefix("Value error, ")
    if typ.startswith("literal_error") or typ.endswith("_parsing") or typ.endswith("_type"):
        return f"{msg[0].lower()}{msg[1:]}, got {got!r}"
    return msg


def load_rules(path: Path | str) -> Rules:
    """Read and validate a rules file; errors name the file, scan and field."""
    path = Path(path)
    label = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RulesError(f"{path}: rules file not found") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{label}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesError(f"{label}: expected a mapping with a 'scans' list at the top")
    scans_raw = raw.get("scans", [])
    if not isinstance(scans_raw, list):
        raise RulesError(f"{label}: 'scans' must be a list")
    problems: list[str] = []
    scans: list[Scan] = []
    for idx, item in enumerate(scans_raw):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"scan '{name}'" if name else f"scan #{idx + 1}"
        if not isinstance(item, dict):
            problems.append(f"{label}: {where}: expected a mapping")
            continue
        try:
            scans.append(Scan.model_validate(item))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
                field = field.removeprefix("params.").removeprefix("filters.")
                prefix = f"{label}: {where}: {field} " if field else f"{label}: {where}: "
                problems.append(prefix + _describe(err))
    extra_top = set(raw) - {"scans", "rebalance"}
    if extra_top:
        problems.append(f"{label}: unknown top-level key(s) {sorted(extra_top)}")
    seen: set[str] = set()
    for s in scans:
        if s.name in seen:
            problems.append(f"{label}: scan '{s.name}': name is used by another scan")
        seen.add(s.name)
    problems += _unknown_universes(label, scans)
    cpr_lookbacks = {s.params.lookback for s in scans if s.kind == "cpr" and s.enabled}
    if len(cpr_lookbacks) > 1:
        problems.append(
            f"{label}: cpr scans must share one lookback (cpr_narrow is an indicator column), "
            f"got {sorted(cpr_lookbacks)}"
        )
    rebalance = None
    if raw.get("rebalance") is not None:
        try:
            rebalance = RebalanceRule.model_validate(raw["rebalance"])
        except ValidationError as exc:
            problems += [f"{label}: rebalance: {'.'.join(str(p) for p in e['loc'])} {_describe(e)}".replace(": : ", ": ")
                         for e in exc.errors()]
        else:
            if rebalance.from_scan not in seen:
                problems.append(f"{label}: rebalance: from_scan '{rebalance.from_scan}' is not a scan in this file "
                                f"(scans: {', '.join(sorted(seen)) or 'none'})")
    if problems:
        raise RulesError("\n".join(problems))
    return Rules(scans=scans, rebalance=rebalance)


def fingerprint(resolved: dict[str, Any]) -> str:
    """Stable hash of a scan's parameters; a change makes dbt recompute that scan fully."""
    skip = ("alert_min_score", "fingerprint", *(("symbols",) if resolved.get("universe") else ()))
    body = {k: v for k, v in resolved.items() if k not in skip}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def dbt_vars(rules: Rules, universe_spec: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The values the dbt models read via var(): pass as ``dbt build --vars <json>``.

    A scan naming a universe keeps the name in ``universe``; the universe's candidates and
    filters go to ``universes`` (``universe_spec(name)``, by default
    :func:`~trading_pipeline.marketdata.universes.dbt_spec` on TRADING_UNIVERSES_FILE), from
    which ``int_universe_members`` judges membership on every session and the signal macros
    join it, so each session is scanned with its own members, in a full rebuild too. The scan's
    ``symbols`` is the candidate list of a list or file universe (a pre-filter; None for
    ``stored`` and Alpaca's list) and its fingerprint holds the universe's ``rule``: editing the
    universe recomputes the scan's history, a new session's membership does not.
    """
    scans = []
    specs: dict[str, dict[str, Any]] = {}
    for scan in rules.enabled_scans:
        r = scan.resolved()
        name = scan.universe_name
        if name:
            if name not in specs:
                specs[name] = _universe_spec(name, scan.name, universe_spec)
            r["universe_rule"] = specs[name]["rule"]
        r["fingerprint"] = fingerprint(r)
        if name:
            r["symbols"] = _candidate_list(specs[name])
        scans.append(r)
    cpr = [s for s in rules.enabled_scans if s.kind == "cpr"]
    out: dict[str, Any] = {"scans": scans, "cpr_lookback": cpr[0].params.lookback if cpr else 20}
    if specs:  # only then: the project's default vars (no universe) stay equal to dbt_vars(rules.yaml)
        out["universes"] = list(specs.values())
    return out


def _candidate_list(spec: dict[str, Any]) -> list[str] | None:
    """A list universe's candidates as the scan's symbol pre-filter ([NO_SYMBOLS] when empty: an
    empty list would mean every symbol to the macros); None for stored and broker: alpaca."""
    if spec["candidates"] is None or spec["kind"] == "broker:alpaca":
        return None
    return sorted(s for group in spec["candidates"].values() for s in group) or [NO_SYMBOLS]


def _universe_spec(name: str, scan: str, spec: Callable[[str], dict[str, Any]] | None) -> dict[str, Any]:
    from trading_pipeline.marketdata.universes import UniverseError, dbt_spec
    from trading_pipeline.settings import get_settings

    try:
        return spec(name) if spec else dbt_spec(name, get_settings())
    except UniverseError as exc:
        raise RulesError(f"scan '{scan}': universe '{name}': {exc}") from None


def _unknown_universes(label: str, scans: list[Scan]) -> list[str]:
    """Scans naming a universe that TRADING_UNIVERSES_FILE does not hold (or cannot be read)."""
    named = [s for s in scans if s.universe_name]
    if not named:
        return []
    from trading_pipeline.marketdata.universes import UniverseError, load_universes
    from trading_pipeline.settings import get_settings

    path = get_settings().universes_file
    try:
        known = load_universes(path)
    except UniverseError as exc:
        return [f"{label}: scan '{s.name}': universe '{s.universe_name}': {exc}" for s in named[:1]]
    return [f"{label}: scan '{s.name}': universe '{s.universe_name}' is not in {path} "
            f"(universes: {', '.join(sorted(known)) or 'none'}; a single symbol is written [{s.universe_name}])"
            for s in named if s.universe_name not in known]
