"""``marts/portfolio_risk``: each account's VaR/ES, exposure, beta and stress scenarios per session.

Runs after every ``ops/orders`` materialization (a sensor; the order job runs after each new
set of signals, so at least once per session): the positions the ops store holds then, the
warehouse's daily closes up to the session (the newest daily bar's, unless configured). One row
per account and session, plus ``(total)`` (all accounts as one portfolio); a re-run for the same
session replaces that session's rows, so the table is the history. Definitions:
trading_pipeline/trading/portfolio_risk.py (README "Portfolio risk").
"""

import json

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.orders import ORDERS
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import get_settings

PORTFOLIO_RISK = dg.AssetKey(["marts", "portfolio_risk"])
TOTAL = "(total)"  # not a valid account name: the row of all accounts as one portfolio

DDL = """CREATE TABLE IF NOT EXISTS marts.portfolio_risk (
    session_date DATE, account VARCHAR, as_of DATE, window_sessions INTEGER, sessions INTEGER,
    horizon_days INTEGER, benchmark VARCHAR, cash DOUBLE, equity DOUBLE,
    long_exposure DOUBLE, short_exposure DOUBLE, gross_exposure DOUBLE, net_exposure DOUBLE, positions INTEGER,
    var_95 DOUBLE, es_95 DOUBLE, var_99 DOUBLE, es_99 DOUBLE,
    var_95_horizon DOUBLE, es_95_horizon DOUBLE, var_99_horizon DOUBLE, es_99_horizon DOUBLE,
    beta DOUBLE, beta_dollars DOUBLE, worst_scenario VARCHAR, worst_scenario_pnl DOUBLE,
    scenarios VARCHAR, error VARCHAR, computed_at TIMESTAMP)"""
COLUMNS = 29


class RiskRunConfig(dg.Config):
    """Empty/0 fields use the newest daily bar's session and the TRADING_RISK_* settings."""

    session: str = ""
    window: int = 0
    horizon: int = 0


def _row(session: str, r: dict) -> list:
    if "error" in r:
        return [session, r["account"], *[None] * (COLUMNS - 4), r["error"]]  # no figures, the reason
    ex, h = r["exposure"], r["horizon"]
    done = [s for s in r["scenarios"] if s["pnl"] is not None]
    worst = min(done, key=lambda s: s["pnl"]) if done else None
    scenarios = [{k: s.get(k) for k in ("name", "kind", "status", "pnl", "pnl_pct", "worst_symbol", "worst_pnl",
                                         "sources", "no_data")} for s in r["scenarios"]]
    return [session, r["account"], r["as_of"], r["window"], r["sessions"], r["horizon_days"], r["benchmark"],
            r["cash"], r["equity"], ex["long"], ex["short"], ex["gross"], ex["net"], len(r["positions"]),
            r["var_95"], r["es_95"], r["var_99"], r["es_99"], h["var_95"], h["es_95"], h["var_99"], h["es_99"],
            r["beta"], r["beta_dollars"], worst["name"] if worst else None, worst["pnl"] if worst else None,
            json.dumps(scenarios, default=str), None]


@dg.asset(
    key=PORTFOLIO_RISK,
    deps=[ORDERS],
    pool=WAREHOUSE_WRITERS,
    group_name="trading",
    kinds={"python", "duckdb"},
    description="Per account and session (and '(total)'): 1-day and N-day historical VaR/ES at 95/99%, "
    "exposure, beta to the benchmark, and the worst stress scenario (all scenarios as JSON), from the ops "
    "store's positions and the daily closes. Replaced per session on re-run.",
)
def portfolio_risk(context: dg.AssetExecutionContext, config: RiskRunConfig, warehouse: WarehouseResource):
    from trading_pipeline.trading import portfolio_risk as pr
    from trading_pipeline.trading.services import accounts_of
    from trading_pipeline.trading.store import OpsStore

    settings = get_settings()
    store = OpsStore.from_settings(settings)
    try:
        names = sorted(set(accounts_of(settings).names()) | set(store.list_accounts()))
        books = [pr.book_of(store.portfolio(a)) for a in names]
    finally:
        store.close()
    path = warehouse.resolved_path()
    con = wh.connect(path, read_only=True)
    try:
        row = wh.fetch_one(con, "SELECT max(session_date) FROM raw.bars_daily WHERE timeframe = '1d'")
        session = config.session or (row[0].isoformat() if row and row[0] else None)
        if session is None:
            raise dg.Failure(description="no daily bars in the warehouse: nothing to measure risk with")
        try:
            view = pr.assess_books(con, books, window=config.window or settings.risk_window,
                                   horizon=config.horizon or settings.risk_horizon,
                                   benchmark=settings.risk_benchmark or None,
                                   scenarios_file=settings.scenarios_file, as_of=session)
        except (pr.ScenarioFileError, pr.RiskInputError) as exc:
            raise dg.Failure(description=str(exc)) from None
    finally:
        con.close()
    total = {**view["total"], "account": TOTAL}
    rows = [_row(session, r) for r in [*view["accounts"], total]]

    def write() -> None:
        con.execute(DDL)
        con.execute("DELETE FROM marts.portfolio_risk WHERE session_date = ?::DATE", [session])
        con.executemany(f"INSERT INTO marts.portfolio_risk VALUES (?::DATE, {', '.join(['?'] * (COLUMNS - 2))}, "
                        "now()::TIMESTAMP)", rows)

    with wh.writer(path) as con:
        wh.transaction(con, write)
    errors = {r["account"]: r["error"] for r in [*view["accounts"], total] if "error" in r}
    for account, err in errors.items():
        context.log.warning(f"portfolio risk of {account}: {err}")
    logs.run_event(context.log, "portfolio_risk", session=session, accounts=len(view["accounts"]), errors=len(errors))
    return dg.MaterializeResult(metadata={
        "session": dg.MetadataValue.text(session),
        "accounts": dg.MetadataValue.int(len(view["accounts"])),
        "benchmark": dg.MetadataValue.text(str(view["benchmark"])),
        "total_var_99": dg.MetadataValue.float(float(total["var_99"])) if "error" not in total
        else dg.MetadataValue.text("n/a"),
        "errors": dg.MetadataValue.json(errors),
    })


portfolio_risk_job = dg.define_asset_job(
    "portfolio_risk", selection=dg.AssetSelection.assets(PORTFOLIO_RISK),
    description="Measure every account's portfolio risk at the newest session (marts.portfolio_risk).",
    config=run_logging(),
)


@dg.asset_sensor(asset_key=ORDERS, job=portfolio_risk_job, minimum_interval_seconds=30,
                 default_status=dg.DefaultSensorStatus.RUNNING)
def orders_to_portfolio_risk(context: dg.SensorEvaluationContext, asset_event):
    """Each materialization of ops/orders launches one risk run (keyed by its run)."""
    yield dg.RunRequest(run_key=f"risk-{asset_event.run_id}", run_config=with_run_logging())
