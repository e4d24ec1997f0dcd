"""GET /positions: open positions across accounts with last price and unrealized P&L."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.routers.portfolio import positions_of
from trading_api.schemas import READ_RESPONSES, PositionList

router = APIRouter(tags=["positions"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


@router.get("/positions", response_model=PositionList, summary="Open positions")
def positions(
    _key: ApiKeyRecord,
    state: State,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-/=^]{1,32}$")] = None,
) -> PositionList:
    items = []
    for acct in [account] if account else store.list_accounts():
        pf = store.portfolio(acct)
        prices = state.feed().last_closes([p.symbol for p in pf.open_positions()])
        items += [p for p in positions_of(pf, prices) if not symbol or p.symbol == symbol.upper()]
    return PositionList(count=len(items), items=items)
