"""GET /portfolio: cash, equity and P&L per account and in total, valued at the snapshot's last closes."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.schemas import READ_RESPONSES, Portfolio, PortfolioList, PortfolioTotal, Position

router = APIRouter(tags=["portfolio"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])


def positions_of(pf: Any, prices: dict) -> list[Position]:
    out = []
    for p in sorted(pf.open_positions(), key=lambda p: p.symbol):
        last = prices.get(p.symbol)
        out.append(
            Position(
                account=pf.account, symbol=p.symbol, quantity=p.quantity, avg_price=p.avg_price, last_price=last,
                market_value=p.market_value(last) if last is not None else None,
                unrealized_pnl=p.unrealized_pnl(last) if last is not None else None,
                realized_pnl=p.realized_pnl,
            )
        )
    return out


def portfolio_of(state: State, store: Any, account: str) -> Portfolio:
    pf = store.portfolio(account)
    prices = state.feed().last_closes([p.symbol for p in pf.open_positions()])
    return Portfolio(
        account=account, starting_cash=pf.starting_cash, cash=pf.cash, equity=pf.equity(prices),
        realized_pnl=pf.realized_pnl(), unrealized_pnl=pf.unrealized_pnl(prices),
        gross_exposure=pf.gross_exposure(prices), positions=positions_of(pf, prices),
    )


@router.get("/portfolio", response_model=PortfolioList, summary="Portfolio per account")
def portfolio(
    _key: ApiKeyRecord,
    state: State,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$", description="Only this account (default: all).")] = None,
) -> PortfolioList:
    accounts = [account] if account else store.list_accounts()
    items = [portfolio_of(state, store, a) for a in accounts]
    return PortfolioList(accounts=items, total=PortfolioTotal(
        accounts=len(items),
        **{f: sum((getattr(p, f) or 0 for p in items), start=Decimal(0))
           for f in ("cash", "equity", "realized_pnl", "unrealized_pnl", "gross_exposure")},
    ))
