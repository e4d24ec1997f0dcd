"""POST /rebalance/preview: the orders that would move an account to target weights (nothing sent).

The rules are trading_pipeline/trading/rebalance.py's (whole shares, drift band, minimum trade,
sells first, buys scaled to the cash); the prices are the serving snapshot's last closes.
"""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Depends, HTTPException

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.routers._params import field_error
from trading_api.schemas import (
    READ_RESPONSES,
    ErrorDetail,
    RebalancePreview,
    RebalancePreviewRequest,
)

router = APIRouter(tags=["rebalance"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


@router.post(
    "/rebalance/preview",
    response_model=RebalancePreview,
    responses={
        400: {"model": ErrorDetail, "description": "The body could not be read as text (e.g. not UTF-8)."},
        422: {"description": "Bad targets (duplicate or unknown symbols, weights above 1 in total) or an unknown account."},
        503: {"model": ErrorDetail, "description": "The accounts file or the broker is unavailable."},
    },
    summary="Preview a rebalance to target weights (nothing is sent)",
)
def preview(_key: ApiKeyRecord, state: State, store: Store, body: RebalancePreviewRequest) -> RebalancePreview:
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.brokers.base import BrokerError
    from trading_pipeline.trading.execution import commission_estimate
    from trading_pipeline.trading.rebalance import (
        RebalanceError,
        plan_for_account,
        targets_from_rows,
    )

    account = body.account or state.settings.account
    try:
        targets = targets_from_rows([(i, t.symbol, t.weight) for i, t in enumerate(body.targets)], "targets", "item")
    except RebalanceError as exc:
        raise field_error(("body", "targets"), str(exc)) from exc
    try:
        broker = state.broker(account)
        start = Decimal(0) if store.has_account(account) else broker.account().cash
        plan = plan_for_account(store=store, feed=state.feed(), account=account, targets=targets,
                                starting_cash=start, min_trade=body.min_trade, drift_band=body.drift_band,
                                commission=commission_estimate(broker))
    except UnknownAccount as exc:
        raise field_error(("body", "account"), str(exc.args[0])) from exc
    except RebalanceError as exc:
        raise field_error(("body", "targets"), str(exc)) from exc
    except (BrokerError, OSError) as exc:
        raise HTTPException(503, f"rebalance preview unavailable: {exc}") from exc
    return RebalancePreview(**plan.to_dict())
