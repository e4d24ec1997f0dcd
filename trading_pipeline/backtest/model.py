"""What a backtest is asked (:class:`BacktestConfig`) and what it returns (:class:`BacktestResult`),
with the frames' schemas; built and validated by :func:`make_config`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import polars as pl

from trading_pipeline.trading.brokers.paper import to_decimal
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


@dataclass(frozen=True)
class BacktestConfig:
    strategy: str
    symbols: tuple[str, ...] | None = None
    start: date | None = None
    end: date | None = None
    hold: int | None = 5
    initial_cash: Decimal = Decimal("100000")
    slippage_bps: Decimal = Decimal("5")
    commission_per_share: Decimal = Decimal("0.005")
    commission_min: Decimal = Decimal("1")
    allow_short: bool = False
    exit_on_opposite: bool = True
    sizing: Sizing = field(default_factory=Sizing)
    limits: RiskLimits = field(default_factory=RiskLimits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "symbols": list(self.symbols) if self.symbols else None,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "hold": self.hold,
            "initial_cash": str(self.initial_cash),
            "slippage_bps": str(self.slippage_bps),
            "commission_per_share": str(self.commission_per_share),
            "commission_min": str(self.commission_min),
            "allow_short": self.allow_short,
            "exit_on_opposite": self.exit_on_opposite,
            "sizing": self.sizing.model_dump(mode="json"),
            "limits": self.limits.model_dump(mode="json"),
        }

    def run_id(self) -> str:
        """Same parameters, same id: storing a re-run replaces the earlier rows."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
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

    def summary(self) -> dict[str, Any]:
        """Metrics, the per-symbol breakdown and the parameters, JSON-ready."""
        return {
            "run_id": self.run_id,
            "config": self.config.to_dict(),
            "metrics": self.metrics,
            "by_symbol": self.by_symbol.to_dicts(),
            "rejections": self.rejections.height,
        }


def _as_date(x: date | str | None) -> date | None:
    if x is None or x == "":
        return None
    return x if isinstance(x, date) else date.fromisoformat(str(x))


def make_config(
    *,
    strategy: str,
    symbols: Sequence[str] | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    hold: int | None = 5,
    initial_cash: float | Decimal = 100_000,
    slippage_bps: float | Decimal = Decimal("5"),
    commission_per_share: float | Decimal = Decimal("0.005"),
    commission_min: float | Decimal = Decimal("1"),
    allow_short: bool = False,
    exit_on_opposite: bool = True,
    sizing: Sizing | None = None,
    limits: RiskLimits | None = None,
) -> BacktestConfig:
    if not strategy:
        raise BacktestError(f"no strategy given; use one of: {', '.join(STRATEGY_KINDS)} or a scan name from rules.yaml")
    if hold is not None and hold < 0:
        raise BacktestError(f"hold must be >= 0 sessions (0 = exit only on the opposite signal), got {hold}")
    s, e = _as_date(start), _as_date(end)
    if s and e and s > e:
        raise BacktestError(f"start {s} is after end {e}")
    if not hold and not exit_on_opposite:
        raise BacktestError("with hold 0 and no opposite-signal exit, positions would never close")
    return BacktestConfig(
        strategy=strategy,
        symbols=tuple(sorted({x.upper() for x in symbols})) if symbols else None,
        start=s, end=e, hold=hold,
        initial_cash=to_decimal(initial_cash), slippage_bps=to_decimal(slippage_bps),
        commission_per_share=to_decimal(commission_per_share), commission_min=to_decimal(commission_min),
        allow_short=allow_short, exit_on_opposite=exit_on_opposite,
        sizing=sizing or Sizing(), limits=limits or RiskLimits(),
    )


def config_from_dict(d: dict[str, Any]) -> BacktestConfig:
    """The inverse of :meth:`BacktestConfig.to_dict` (as stored in marts.backtest_runs)."""
    return BacktestConfig(
        strategy=d["strategy"], symbols=tuple(d["symbols"]) if d.get("symbols") else None,
        start=_as_date(d.get("start")), end=_as_date(d.get("end")), hold=d.get("hold"),
        initial_cash=Decimal(d["initial_cash"]), slippage_bps=Decimal(d["slippage_bps"]),
        commission_per_share=Decimal(d["commission_per_share"]), commission_min=Decimal(d["commission_min"]),
        allow_short=bool(d.get("allow_short")), exit_on_opposite=bool(d.get("exit_on_opposite", True)),
        sizing=Sizing.model_validate(d["sizing"]), limits=RiskLimits.model_validate(d["limits"]),
    )


