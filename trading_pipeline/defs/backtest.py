"""The ``backtest`` job: replay a strategy's signals and store the results in the warehouse.

Only Dagster runs write the warehouse (one writer per store), so the CLI launches this job
and reads the results back. Results are keyed by the backtest's run id (a hash of its
parameters unless given), so re-running the same backtest replaces its rows.

Tables: ``marts.backtest_runs`` (one row per run: parameters and metrics),
``marts.backtest_trades`` and ``marts.backtest_equity``.
"""

import json

import dagster as dg
import polars as pl

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.marketdata.bars import utcnow

POOL = WAREHOUSE_WRITERS


class BacktestRunConfig(dg.Config):
    """What to replay. Empty start/end mean all sessions; empty symbols mean all."""

    strategy: str
    symbols: list[str] = []
    start: str = ""
    end: str = ""
    hold: int = 5
    initial_cash: float = 100_000.0
    slippage_bps: float = 5.0
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    # How signals become orders (trading/decisions.py); unset: the live TRADING_* settings
    allow_short: bool | None = None
    on_repeat: str | None = None  # skip | add
    on_opposite: str | None = None  # exit | reverse | ignore
    stop_loss_atr: float | None = None  # exits: a bracket N x ATR from the signal close (with take_profit_atr)
    take_profit_atr: float | None = None
    run_id: str = ""

    def backtest_config(self, settings):
        """The domain's :class:`~trading_pipeline.backtest.model.BacktestConfig`: unset decision
        rules and the risk limits are the live pipeline's (TRADING_* settings, risk.yaml).
        Raises BacktestError for a bad parameter."""
        from trading_pipeline.backtest.model import make_config
        from trading_pipeline.trading.decisions import DecisionRules
        from trading_pipeline.trading.risk import RiskLimits

        rules = DecisionRules.from_settings(settings).model_dump()
        rules.update({k: v for k in RULE_FIELDS if (v := getattr(self, k)) is not None})
        params = self.model_dump(exclude={"run_id", *RULE_FIELDS})
        return make_config(**params, rules=rules, limits=RiskLimits.from_yaml(settings.risk_file))


RULE_FIELDS = ("allow_short", "on_repeat", "on_opposite", "stop_loss_atr", "take_profit_atr")


def store_result(con, result, dagster_run_id: str = "") -> dict[str, int]:
    """Replace the rows of ``result.run_id`` in the three backtest tables, in one transaction."""
    run_id = result.run_id
    m = result.metrics
    runs = pl.DataFrame([{
        "run_id": run_id,
        "strategy": result.config.strategy,
        "symbols": ",".join(result.config.symbols or ()),
        "start_date": m.get("start"),
        "end_date": m.get("end"),
        "hold": result.config.hold,
        "total_return": m.get("total_return"),
        "sharpe": m.get("sharpe"),
        "max_drawdown": m.get("max_drawdown"),
        "trades": m.get("trades"),
        "config_json": json.dumps(result.config.to_dict(), sort_keys=True),
        "metrics_json": json.dumps(m, sort_keys=True),
        "bars_processed": result.bars_processed,
        "signals_used": result.signals_used,
        "dagster_run_id": dagster_run_id,
        "created_at": utcnow(),
    }], schema_overrides={"start_date": pl.Utf8, "end_date": pl.Utf8, "total_return": pl.Float64,
                          "sharpe": pl.Float64, "max_drawdown": pl.Float64, "hold": pl.Int64})
    frames = {
        "marts.backtest_runs": runs,
        "marts.backtest_trades": result.trades.with_columns(pl.lit(run_id).alias("run_id")),
        "marts.backtest_equity": result.equity.with_columns(pl.lit(run_id).alias("run_id")),
    }
    counts = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table, df in frames.items():
            con.register("_bt", df)
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _bt LIMIT 0")
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _bt")
            con.unregister("_bt")
            counts[table] = df.height
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


@dg.op(
    name="run_backtest",
    pool=POOL,
    description="Replay a strategy's signals from marts.signals through sizing, risk and the "
    "paper fill model; store trades, equity and metrics in marts.backtest_*.",
)
def run_backtest_op(context: dg.OpExecutionContext, config: BacktestRunConfig, warehouse: WarehouseResource) -> dict:
    from trading_pipeline.backtest.engine import run_backtest
    from trading_pipeline.settings import get_settings

    path = warehouse.resolved_path()
    result = run_backtest(path, config.backtest_config(get_settings()))
    if config.run_id:
        result.run_id = config.run_id
    with wh.writer(path) as con:
        counts = store_result(con, result, context.run_id)
    logs.run_event(context.log, "backtest_stored", backtest_run_id=result.run_id, strategy=config.strategy,
                   trades=result.trades.height, sessions=result.equity.height)
    context.add_output_metadata({"backtest_run_id": result.run_id, **{k: dg.MetadataValue.int(v) for k, v in counts.items()}})
    return {"run_id": result.run_id, "metrics": result.metrics}


@dg.job(name="backtest", description="Backtest a strategy on stored signals; results in marts.backtest_*.")
def backtest_job():
    run_backtest_op()
