"""GET /risk: the limits in force, each account's usage against them, and the kill switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from trading_api.deps import ApiKeyRecord, State, Store
from trading_api.schemas import AUTH_RESPONSES, KillSwitch, RiskEvent, RiskStatus, RiskUsage

router = APIRouter(tags=["risk"], responses=AUTH_RESPONSES)


def _account_limits(settings, account: str, base):
    """The account's limits: risk.yaml with its overrides from the accounts file (risk.yaml's own
    for an account the file does not name)."""
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.services import accounts_of

    try:
        return accounts_of(settings).get(account).limits(base)
    except UnknownAccount:
        return base


@router.get("/risk", response_model=RiskStatus, summary="Risk limits, usage and kill switch")
def risk(
    _key: ApiKeyRecord,
    state: State,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    events: Annotated[int, Query(ge=0, le=1000, description="How many recent risk rejections to include.")] = 20,
) -> RiskStatus:
    from trading_pipeline.trading.risk import RiskContext, RiskEngine, RiskLimits

    try:
        limits = RiskLimits.from_yaml(state.settings.risk_file)
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"risk limits unavailable ({state.settings.risk_file}): {exc}") from exc
    usage = []
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
                limits=own.model_dump() if own is not limits else None,
            )
        )
    ks = store.kill_switch()
    recent = store.list_risk_events(account=account, limit=events) if events else []
    return RiskStatus(
        limits=limits.model_dump(),
        kill_switch=KillSwitch(**ks.__dict__),
        usage=usage,
        recent_events=[RiskEvent(**e.__dict__) for e in recent],
    )
