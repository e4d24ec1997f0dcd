"""The ``rebalance`` job: move an account to target weights (trading/rebalance.py), on demand or
on a schedule that is OFF until switched on (in the UI, or ``dagster schedule start``).

* ``rebalance`` job: one op; config ``targets`` (a symbol,weight CSV; default
  TRADING_REBALANCE_TARGETS), ``account`` (default TRADING_ACCOUNT), ``dry_run``,
  ``min_trade``, ``drift_band``. Orders go through ``place_order`` (risk engine, ops store,
  broker), sells first, with deterministic ids: a retried run places nothing twice.
* ``rebalance_after_close`` schedule (STOPPED by default): 45 minutes after each XNYS close
  (13:45 on early-close days, else 16:45 New York time; the end-of-day scan has loaded the
  session's bars by then), holidays skipped, one run per session (run key).
"""

from decimal import Decimal

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.bars import SESSION_TAG
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.defs.scans import eod_decision
from trading_pipeline.settings import get_settings

JOB = "rebalance"


class RebalanceConfig(dg.Config):
    """Empty fields use TRADING_* settings."""

    targets: str = ""  # a symbol,weight CSV; default TRADING_REBALANCE_TARGETS, else rules.yaml's rebalance:
    from_scan: str = ""  # instead of targets: equal weight over this scan's top long signals
    top: int = 5
    account: str = ""  # default TRADING_ACCOUNT
    dry_run: bool = False
    min_trade: str = "100"  # skip orders worth less than this
    drift_band: str = "0.5"  # percentage points of equity


@dg.op(name="rebalance_account", description="Compute the orders that move an account to its target weights at "
       "the last close and (unless dry_run) send them through the risk engine and the broker, sells first.")
def rebalance_account(context: dg.OpExecutionContext, config: RebalanceConfig) -> dict:
    from trading_pipeline.trading.brokers.base import BrokerError
    from trading_pipeline.trading.execution import commission_estimate
    from trading_pipeline.trading.rebalance import (
        RebalanceError,
        execute,
        plan_for_account,
        read_targets,
        sent_dict,
        targets_from_scan,
    )
    from trading_pipeline.trading.services import make_broker, risk_engine, warehouse_feed
    from trading_pipeline.trading.store import OpsStore

    settings = get_settings()
    path = config.targets or (str(settings.rebalance_targets) if settings.rebalance_targets and not config.from_scan else "")
    scan, top = config.from_scan, config.top
    if not path and not scan:
        from trading_pipeline.scans.rules import load_rules

        rule = load_rules(settings.rules_file).rebalance
        if rule is None:
            raise dg.Failure(description="no targets: set the run config's `targets` or `from_scan`, "
                             "TRADING_REBALANCE_TARGETS, or `rebalance:` in the rules file")
        scan, top = rule.from_scan, rule.top
    if not path:
        path = f"scan {scan} (top {top})"
    account = config.account or settings.account
    store = OpsStore.from_settings(settings)
    try:
        if scan:
            from trading_pipeline.marketdata import warehouse

            with warehouse.connect(settings.warehouse_path, read_only=True) as con:
                goal = targets_from_scan(con, scan, top)
        else:
            goal = read_targets(path)
        feed = warehouse_feed(settings)
        broker = make_broker(settings, store, account, feed=feed)
        start = Decimal(0) if store.has_account(account) else broker.account().cash
        plan = plan_for_account(store=store, feed=feed, account=account, targets=goal, starting_cash=start,
                                min_trade=Decimal(config.min_trade), drift_band=Decimal(config.drift_band),
                                commission=commission_estimate(broker))
        sent = [] if config.dry_run else execute(plan, store=store, broker=broker, feed=feed,
                                                   risk_engine=risk_engine(settings, store, account))
    except (RebalanceError, BrokerError, ValueError, OSError) as exc:
        raise dg.Failure(description=f"rebalance of {account} to {path} failed: {exc}") from exc
    finally:
        store.close()
    actions: dict[str, int] = {}
    for s in sent:
        actions[s.action] = actions.get(s.action, 0) + 1
    logs.run_event(context.log, "rebalance", account=account, targets=path, session=plan.session,
                   orders=len(plan.orders), dry_run=config.dry_run, actions=actions)
    context.add_output_metadata({
        "account": dg.MetadataValue.text(account),
        "session": dg.MetadataValue.text(plan.session),
        "equity": dg.MetadataValue.float(float(plan.equity)),
        "orders": dg.MetadataValue.json([{"symbol": o.symbol, "side": o.side, "quantity": str(o.quantity),
                                          "value": str(o.value)} for o in plan.orders]),
        "actions": dg.MetadataValue.json(actions),
        "not_sent": dg.MetadataValue.json([{"symbol": s.order.symbol, "action": s.action, "reason": s.reason}
                                           for s in sent if s.action in ("denied", "rejected", "error")]),
    })
    body = plan.to_dict()
    body["results"] = [sent_dict(s) for s in sent]
    return body


@dg.job(name=JOB, description="Rebalance an account to target weights (symbol,weight CSV) at the last close.",
        config=run_logging())
def rebalance_job():
    rebalance_account()


@dg.schedule(
    job=rebalance_job,
    cron_schedule=["45 13 * * 1-5", "45 16 * * 1-5"],
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="OFF by default. 45 minutes after each XNYS close (13:45 on early-close days, else 16:45): "
    "rebalance TRADING_ACCOUNT to TRADING_REBALANCE_TARGETS (or rules.yaml's `rebalance:` scan).",
)
def rebalance_after_close(context: dg.ScheduleEvaluationContext):
    run, what = eod_decision(context.scheduled_execution_time)
    if not run:
        return dg.SkipReason(what)
    settings = get_settings()
    if settings.rebalance_targets is None:
        from trading_pipeline.scans.rules import RulesError, load_rules

        try:
            rule = load_rules(settings.rules_file).rebalance
        except RulesError as exc:
            return dg.SkipReason(f"the rules file is invalid: {exc}")
        if rule is None:
            return dg.SkipReason("no targets: set TRADING_REBALANCE_TARGETS or `rebalance:` in the rules file")
    # the 16:45 tick on an early-close day finds the 13:45 run's key and launches nothing
    return dg.RunRequest(run_key=f"rebalance-{what}", tags={SESSION_TAG: what}, run_config=with_run_logging())
