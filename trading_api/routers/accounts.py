"""GET /accounts: every account, its broker, the scans it trades, its limits and where it stands."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.schemas import READ_RESPONSES, AccountInfo, AccountList, ErrorDetail

router = APIRouter(tags=["accounts"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


@router.get(
    "/accounts",
    response_model=AccountList,
    responses={503: {"model": ErrorDetail, "description": "The accounts file or the risk limits file cannot be read."}},
    summary="Accounts: broker, scans, limits, cash and equity",
)
def accounts(_key: ApiKeyRecord, state: State, store: Store) -> AccountList:
    from trading_pipeline.trading.services import account_overview

    try:
        view = account_overview(state.settings, store, state.feed())
    except (OSError, ValueError) as exc:  # AccountsError is a ValueError
        raise HTTPException(503, f"accounts unavailable: {exc}") from exc
    rows = [AccountInfo(**row) for row in view["accounts"]]
    return AccountList(source=view["source"], default=view["default"], accounts=rows,
                       total_equity=sum((r.equity for r in rows if r.equity is not None), start=0))
