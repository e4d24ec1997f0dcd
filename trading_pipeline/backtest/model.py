"""What a backtest is asked (:class:`BacktestConfig`) and what it returns (:class:`BacktestResult`),
with the frames' schemas; built and validated by :func:`make_config`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading_pipeline.trading.decisions import DecisionRules, OppositeSignal
from trading_pipeline.trading.model import to_decimal
from trading_pipeline.trading.risk import RiskLimits
from trading_pipeline.trading.sizing import Sizing

ZERO = Decimal(0)
ACCOUNT = "backtest"
TRADING_DAYS = 252
STRATEGY_KINDS: dict[str, tuple[str, ...]] = {
    "breakout": ("breakout_up", "breakout_down"),
    "crp": ("crp_long", "crp_short"),
}

ProgressCallback = Callable[[int, int], None]  # (sessions done, sessions total)

TRADE_SCHEMA: dict[str, Any] = {
    "trade_id": pl.Int64,
    "symbol": pl.Utf8,
    "direction": pl.Utf8,
    "signal_kind": pl.Utf8,
    "signal_session": pl.Date,
    "entry_session": pl.Date,
    "entry_ts": pl.Datetime("us"),
    "entry_price": pl.Float64,
    "exit_signal_session": pl.Date,
    "exit_session": pl.Date,
    "exit_ts": pl.Datetime("us"),
    "exit_price": pl.Float64,
    "exit_reason": pl.Utf8,
    "quantity": pl.Float64,
    "commission": pl.Float64,
    "pnl": pl.Float64,
    "return_pct": pl.Float64,
    "sessions_held": pl.Int64,
    "is_open": pl.Boolean,
}
EQUITY_SCHEMA: dict[str, Any] = {
    "session_date": pl.Date,
    "cash": pl.Float64,
    "market_value": pl.Float64,
    "gross_exposure": pl.Float64,
    "equity": pl.Float64,
    "daily_return": pl.Float64,
    "drawdown": pl.Float64,
    "open_positions": pl.Int64,
}
REJECTION_SCHEMA: dict[str, Any] = {
    "session_date": pl.Date,
    "symbol": pl.Utf8,
    "side": pl.Utf8,
    "quantity": pl.Float64,
    "purpose": pl.Utf8,
    "rule": pl.Utf8,
    "reason": pl.Utf8,
}
ORDER_SCHEMA: dict[str, Any] = {  # every order the risk checks let through, as the live job would send it
    "session_date": pl.Date,  # the close it was decided at (fills at the next open)
    "symbol": pl.Utf8,
    "side": pl.Utf8,
    "quantity": pl.Float64,
    "purpose": pl.Utf8,  # entry | add | exit | reverse
    "reason": pl.Utf8,  # signal | opposite_signal | reverse | hold
    "signal_kind": pl.Utf8,
    "stop_loss_price": pl.Float64,  # an entry's bracket (rules stop_loss_atr / take_profit_atr), else null
    "take_profit_price": pl.Float64,
    "note": pl.Utf8,  # why an entry has no bracket when the rules ask for one (no ATR at the signal bar)
}
BY_SYMBOL_SCHEMA: dict[str, Any] = {
    "symbol": pl.Utf8,
    "trades": pl.Int64,
    "wins": pl.Int64,
    "win_rate": pl.Float64,
    "pnl": pl.Float64,
    "avg_return_pct": pl.Float64,
    "best_pnl": pl.Float64,
    "worst_pnl": pl.Float64,
}


class BacktestError(ValueError):
    """A backtest that cannot run as asked; the message says what to change."""


class BacktestConfig(BaseModel):
    """Every parameter of a backtest, declared once: the CLI, the Dagster job's config and
    :func:`~trading_pipeline.backtest.engine.run_backtest` all build this (via :func:`make_config`).
    ``rules``, ``sizing`` and ``limits`` are the live pipeline's own models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = Field(min_length=1)
    symbols: tuple[str, ...] | None = None
    start: date | None = None
    end: date | None = None
    hold: int | None = Field(default=5, ge=0, description="exit after this many sessions; 0/None: only on signals")
    initial_cash: Decimal = Decimal("100000")
    slippage_bps: Decimal = Decimal("5")
    commission_per_share: Decimal = Decimal("0.005")
    commission_min: Decimal = Decimal("1")
    rules: DecisionRules = DecisionRules()
    sizing: Sizing = Sizing()
    limits: RiskLimits = RiskLimits()

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, v: Any) -> tuple[str, ...] | None:
        return tuple(sorted({str(x).upper() for x in v})) if v else None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @field_validator("initial_cash", "slippage_bps", "commission_per_share", "commission_min", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal:
        return to_decimal(v)

    @model_validator(mode="after")
    def _consistent(self) -> BacktestConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if not self.hold and self.rules.on_opposite == OppositeSignal.IGNORE:
            raise ValueError("with hold 0 and opposite signals ignored, positions would never close")
        return self

    @property
    def allow_short(self) -> bool:
        return self.rules.allow_short

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def run_id(self) -> str:
        """Same parameters, same id: storing a re-run replaces the earlier rows. (Rules without
        exits hash as before they had them: a stored run keeps its id.)"""
        d = self.to_dict()
        for key in ("stop_loss_atr", "take_profit_atr"):
            if d["rules"].get(key) is None:
                d["rules"].pop(key, None)
        blob = json.dumps(d, sort_keys=True).encode()
        return "bt-" + hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class BacktestResult:
    config: BacktestConfig
    trades: pl.DataFrame
    equity: pl.DataFrame
    by_symbol: pl.DataFrame
    metrics: dict[str, Any]
    rejections: pl.DataFrame
    bars_processed: int = 0
    signals_used: int = 0
    run_id: str = ""
    orders: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ORDER_SCHEMA))  # not stored in marts

    def summary(self) -> dict[str, Any]:
        """Metrics, the per-symbol breakdown and the parameters, JSON-ready."""
        return {
            "run_id": self.run_id,
            "config": self.config.to_dict(),
            "metrics": self.metrics,
            "by_symbol": self.by_symbol.to_dicts(),
            "rejections": self.rejections.height,
        }


def make_config(**params: Any) -> BacktestConfig:
    """A validated :class:`BacktestConfig`; a clear :class:`BacktestError` for a bad parameter.

    Accepts the older flat ``allow_short`` / ``exit_on_opposite`` beside ``rules`` (stored runs
    and callers from before the shared decision rules)."""
    allow_short = params.pop("allow_short", None)
    exit_on_opposite = params.pop("exit_on_opposite", None)
    if allow_short is not None or exit_on_opposite is not None:
        base = params.get("rules") or DecisionRules()
        base = base if isinstance(base, DecisionRules) else DecisionRules.model_validate(base)
        update: dict[str, Any] = {}
        if allow_short is not None:
            update["allow_short"] = bool(allow_short)
        if exit_on_opposite is not None and not exit_on_opposite:
            update["on_opposite"] = OppositeSignal.IGNORE
        params["rules"] = base.model_copy(update=update)
    if not params.get("strategy"):
        raise BacktestError(f"no strategy given; use one of: {', '.join(STRATEGY_KINDS)} or a scan name from rules.yaml")
    try:
        return BacktestConfig(**{k: v for k, v in params.items() if v is not None or k in ("hold",)})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise BacktestError(problems) from None


def config_from_dict(d: dict[str, Any]) -> BacktestConfig:
    """The inverse of :meth:`BacktestConfig.to_dict` (as stored in marts.backtest_runs)."""
    return make_config(**d)
