"""GET /risk/assessment: historical VaR/ES, exposure, beta and stress scenarios per account and in total.

Positions from the ops store, daily closes from the serving snapshot (the API never opens the
warehouse); the same computation as ``trading risk`` (trading_pipeline/trading/portfolio_risk.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.schemas import READ_RESPONSES, RiskAssessment

router = APIRouter(tags=["risk"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


@router.get(
    "/risk/assessment", response_model=RiskAssessment, summary="Portfolio VaR/ES, exposure, beta and stress scenarios",
    responses={404: {"description": "Unknown account."}, 503: {"description": "The scenarios file cannot be used."}},
)
def assessment(
    _key: ApiKeyRecord,
    state: State,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$", description="Only this account.")] = None,
    window: Annotated[int | None, Query(ge=2, le=10_000, description="Daily returns in the window (default TRADING_RISK_WINDOW).")] = None,
    horizon: Annotated[int | None, Query(ge=1, le=250, description="N-day horizon, 1-day x sqrt(N) (default TRADING_RISK_HORIZON).")] = None,
) -> RiskAssessment:
    """Each account's figures (an account without enough history has ``error`` naming the symbols and
    their sessions, and no figures) and the total: all of them as one portfolio."""
    from trading_pipeline.trading import portfolio_risk as pr
    from trading_pipeline.trading.accounts import AccountsError
    from trading_pipeline.trading.services import accounts_of

    settings = state.settings
    try:
        names = set(accounts_of(settings).names())
    except AccountsError as exc:
        raise HTTPException(503, str(exc)) from exc
    known = sorted(names | set(store.list_accounts()))
    if account is not None and account not in known:
        raise HTTPException(404, f"no account {account!r}; known: {', '.join(known) or 'none'}")
    books = [pr.book_of(store.portfolio(a)) for a in ([account] if account else known)]
    with state.reader.cursor() as (gen, cur):
        if not gen.has("raw.bars_daily"):
            cur = None
        try:
            if cur is None:
                import duckdb

                cur = duckdb.connect()  # a snapshot without daily bars: an empty table, the same answers
                cur.execute("CREATE SCHEMA raw; CREATE TABLE raw.bars_daily (symbol VARCHAR, timeframe VARCHAR, "
                            "session_date DATE, close DOUBLE)")
            view = pr.assess_books(
                cur, books, window=window or settings.risk_window, horizon=horizon or settings.risk_horizon,
                benchmark=settings.risk_benchmark or None, scenarios_file=settings.scenarios_file)
        except pr.ScenarioFileError as exc:
            raise HTTPException(503, str(exc)) from exc
    return RiskAssessment.model_validate(view)
