"""GET /risk: the limits in force, each account's usage against them, the kill switch and the
warnings it is at now; GET /risk/alerts: the recorded risk alerts (trading_pipeline/trading/risk_monitor.py)."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.schemas import (
    READ_RESPONSES,
    KillSwitch,
    RiskAlertList,
    RiskAlertNow,
    RiskEvent,
    RiskMonitorStatus,
    RiskUsage,
    StoredRiskAlert,
)

router = APIRouter(tags=["risk"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


def _account_limits(settings, account: str, base):
    """The account's limits: risk.yaml with its overrides from the accounts file (risk.yaml's own
    for an account the file does not name)."""
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.services import accounts_of

    try:
        return accounts_of(settings).get(account).limits(base)
    except UnknownAccount:
        return base


@router.get("/risk", response_model=RiskMonitorStatus, summary="Risk limits, usage, kill switch and alerts")
def risk(
    _key: ApiKeyRecord,
    state: State,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    events: Annotated[int, Query(ge=0, le=1000, description="How many recent risk rejections to include.")] = 20,
) -> RiskMonitorStatus:
    from trading_pipeline.trading.risk import RiskContext, RiskEngine, RiskLimits

    try:
        limits = RiskLimits.from_yaml(state.settings.risk_file)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"risk limits unavailable ({state.settings.risk_file}): {exc}") from exc
    from trading_pipeline.trading.orders import utcnow
    from trading_pipeline.trading.risk_monitor import account_state, evaluate

    usage, alerts, now = [], [], utcnow()
    for acct in [account] if account else store.list_accounts():
        pf = store.portfolio(acct)
        prices = state.feed().last_closes(store.symbols_in_play(acct))
        ctx = RiskContext.from_store(store, acct, prices, record_mark=False)  # a read: no mark
        exposure = pf.gross_exposure(prices)
        conc = None
        if ctx.equity > 0 and pf.open_positions():
            conc = max(abs(p.quantity) * prices.get(p.symbol, p.avg_price) for p in pf.open_positions()) / ctx.equity * 100
        own = _account_limits(state.settings, acct, limits)
        usage.append(
            RiskUsage(
                account=acct, equity=ctx.equity, open_orders=ctx.open_orders, orders_last_minute=ctx.orders_last_minute,
                daily_pnl=ctx.daily_pnl, day_start_equity=ctx.day_start_equity, gross_exposure=exposure,
                max_concentration_pct=conc,
                buying_power=None if ctx.unpriced_working else RiskEngine(own).buying_power(ctx) - ctx.committed,
                limits=own.model_dump(exclude_none=True) if own is not limits else None,
            )
        )
        # the warnings it is at now (VaR needs daily closes: only where a var_budget asks for it)
        with _closes(state, own.var_budget is not None) as closes:
            now_state = account_state(store, acct, prices, now, closes=closes, want_var=closes is not None,
                                      window=getattr(state.settings, "risk_window", None))
        alerts += [RiskAlertNow(**a.__dict__) for a in evaluate(own, now_state)]
    ks = store.kill_switch()
    recent = store.list_risk_events(account=account, limit=events) if events else []
    return RiskMonitorStatus(
        alerts=alerts,
        limits=limits.model_dump(exclude_none=True),
        kill_switch=KillSwitch(**ks.__dict__),
        usage=usage,
        recent_events=[RiskEvent(**e.__dict__) for e in recent],
    )


@contextmanager
def _closes(state, want: bool):
    """A loader of daily closes from the serving snapshot for the block (None: not wanted, no
    snapshot, or no daily bars in it)."""
    with ExitStack() as stack:
        gen = cur = None
        if want:
            from trading_api.snapshot import SnapshotUnavailable
            from trading_pipeline.trading.portfolio_risk import load_closes

            try:
                gen, cur = stack.enter_context(state.reader.cursor())
            except SnapshotUnavailable:
                gen = None
        yield (lambda symbols: load_closes(cur, symbols)) if gen is not None and gen.has("raw.bars_daily") else None


@router.get(
    "/risk/alerts", response_model=RiskAlertList, summary="Recorded risk alerts (catch-up after a WebSocket reconnect)",
)
def risk_alerts(
    _key: ApiKeyRecord,
    store: Store,
    since_id: Annotated[int, Query(ge=0, le=2**53, description="Only alerts with a larger id (the last alert_id seen).")] = 0,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RiskAlertList:
    """Risk alerts recorded by the order job (once per account, kind, level and session), oldest
    first from ``since_id``: what the WebSocket ``alerts`` channel pushed as ``risk_alert`` while
    a client was away (page with the last id returned)."""
    rows = store.list_risk_alerts(since_id=since_id, account=account, limit=limit)
    return RiskAlertList(
        alerts=[StoredRiskAlert(**{**a.__dict__, "limit": a.limit_value}) for a in rows],
        last_id=store.last_risk_alert_id(),
    )
