"""Statistics of a finished backtest: returns, risk ratios, trade counts, per-symbol breakdown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from trading_pipeline.backtest.model import BY_SYMBOL_SCHEMA, TRADING_DAYS, BacktestConfig

# ---------------------------------------------------------------------------- statistics

def breakdown(trades: pl.DataFrame) -> pl.DataFrame:
    """Per-symbol trades, wins and P&L (open trades at their mark), best symbol first."""
    if trades.is_empty():
        return pl.DataFrame(schema=BY_SYMBOL_SCHEMA)
    return (
        trades.group_by("symbol")
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            (pl.col("pnl") > 0).sum().cast(pl.Int64).alias("wins"),
            pl.col("pnl").sum().alias("pnl"),
            pl.col("return_pct").mean().alias("avg_return_pct"),
            pl.col("pnl").max().alias("best_pnl"),
            pl.col("pnl").min().alias("worst_pnl"),
        )
        .with_columns((pl.col("wins") / pl.col("trades")).alias("win_rate"))
        .select(list(BY_SYMBOL_SCHEMA))
        .sort(["pnl", "symbol"], descending=[True, False])
    )


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 10)


def compute_metrics(equity: pl.DataFrame, trades: pl.DataFrame, cfg: BacktestConfig) -> dict[str, Any]:
    """Returns, risk and trade statistics. Ratios are annualised with 252 sessions, rf = 0."""
    init = float(cfg.initial_cash)
    n = equity.height
    final = float(equity["equity"][-1]) if n else init
    total = final / init - 1
    rets = equity["daily_return"].to_numpy() if n else np.array([])
    annual = (1 + total) ** (TRADING_DAYS / n) - 1 if n and total > -1 else None
    vol = float(np.std(rets, ddof=1)) if n > 1 else None
    mean = float(np.mean(rets)) if n else None
    sharpe = mean / vol * math.sqrt(TRADING_DAYS) if vol and mean is not None else None
    downside = float(np.sqrt(np.mean(np.minimum(rets, 0) ** 2))) if n else None
    sortino = mean / downside * math.sqrt(TRADING_DAYS) if downside and mean is not None else None
    closed = trades.filter(~pl.col("is_open")) if trades.height else trades
    wins = closed.filter(pl.col("pnl") > 0)["pnl"].sum() if closed.height else 0.0
    losses = -closed.filter(pl.col("pnl") < 0)["pnl"].sum() if closed.height else 0.0
    return {
        "initial_cash": init,
        "final_equity": _clean(final),
        "total_return": _clean(total),
        "annual_return": _clean(annual),
        "volatility": _clean(vol * math.sqrt(TRADING_DAYS)) if vol is not None else None,
        "sharpe": _clean(sharpe),
        "sortino": _clean(sortino),
        "max_drawdown": _clean(float(equity["drawdown"].min())) if n else 0.0,
        "trades": closed.height,
        "open_trades": trades.height - closed.height,
        "win_rate": _clean(closed.filter(pl.col("pnl") > 0).height / closed.height) if closed.height else None,
        "profit_factor": _clean(wins / losses) if losses else None,
        "net_pnl": _clean(final - init),
        "commission": _clean(float(trades["commission"].sum())) if trades.height else 0.0,
        "exposure": _clean(float((equity["open_positions"] > 0).mean())) if n else 0.0,
        "avg_gross_exposure_pct": _clean(float((equity["gross_exposure"] / equity["equity"]).mean() * 100)) if n else 0.0,
        "sessions": n,
        "start": equity["session_date"][0].isoformat() if n else None,
        "end": equity["session_date"][-1].isoformat() if n else None,
    }


