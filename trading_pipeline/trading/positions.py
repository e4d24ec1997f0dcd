"""Position accounting built from fills: average cost, realized and unrealized P&L, cash.

Pure and in memory so the ops store, the paper broker and backtests share one definition of
"what do I hold and what did it earn". Money is ``Decimal``. Quantities are signed (a short
is negative). Realized P&L is net of commissions, so ``cash`` always equals starting cash +
realized P&L - cost of what is still held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from trading_pipeline.trading.model import Side

ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    """One execution as the accounting sees it (what the ops store's ``fills`` table holds)."""

    fill_id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    commission: Decimal
    ts: datetime
    realized_pnl: Decimal = ZERO


@dataclass
class Position:
    account: str
    symbol: str
    quantity: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def apply_fill(self, side: Side | str, quantity: Decimal, price: Decimal, commission: Decimal = ZERO) -> Decimal:
        """Book one fill; returns the P&L it realized (net of its commission)."""
        if quantity <= 0:
            raise ValueError(f"fill quantity must be > 0, got {quantity}")
        signed = quantity if Side(side) == Side.BUY else -quantity
        realized = -commission
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = abs(self.quantity) + quantity
            self.avg_price = (abs(self.quantity) * self.avg_price + quantity * price) / total
            self.quantity += signed
        else:
            closing = min(quantity, abs(self.quantity))
            direction = 1 if self.quantity > 0 else -1
            realized += closing * (price - self.avg_price) * direction
            self.quantity += signed
            if self.quantity == 0:
                self.avg_price = ZERO
            elif (self.quantity > 0) != (direction > 0):
                self.avg_price = price  # flipped through zero: the remainder opened at this price
        self.realized_pnl += realized
        return realized

    def market_value(self, last_price: Decimal) -> Decimal:
        return self.quantity * last_price

    def unrealized_pnl(self, last_price: Decimal) -> Decimal:
        return (last_price - self.avg_price) * self.quantity


@dataclass
class Portfolio:
    """One account: cash plus positions. Build it with :meth:`from_fills` or book fills live."""

    account: str
    starting_cash: Decimal = ZERO
    cash: Decimal | None = None
    positions: dict[str, Position] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cash is None:
            self.cash = self.starting_cash

    @classmethod
    def from_fills(cls, account: str, starting_cash: Decimal, fills: Iterable[Fill]) -> Portfolio:
        pf = cls(account=account, starting_cash=starting_cash)
        for f in sorted((f for f in fills if f.account == account), key=lambda f: (f.ts, f.fill_id)):
            pf.apply_fill(f.symbol, f.side, f.quantity, f.price, f.commission)
        return pf

    def position(self, symbol: str) -> Position:
        if symbol not in self.positions:
            self.positions[symbol] = Position(self.account, symbol)
        return self.positions[symbol]

    def apply_fill(
        self, symbol: str, side: Side | str, quantity: Decimal, price: Decimal, commission: Decimal = ZERO
    ) -> Decimal:
        realized = self.position(symbol).apply_fill(side, quantity, price, commission)
        flow = quantity * price
        assert self.cash is not None
        self.cash += (-flow if Side(side) == Side.BUY else flow) - commission
        return realized

    def quantity(self, symbol: str) -> Decimal:
        p = self.positions.get(symbol)
        return p.quantity if p else ZERO

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.quantity != 0]

    def _price(self, p: Position, prices: Mapping[str, Decimal]) -> Decimal:
        # Without a price we value at cost: no invented P&L.
        return prices.get(p.symbol, p.avg_price)

    def realized_pnl(self) -> Decimal:
        return sum((p.realized_pnl for p in self.positions.values()), ZERO)

    def unrealized_pnl(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((p.unrealized_pnl(self._price(p, prices)) for p in self.open_positions()), ZERO)

    def market_value(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((p.market_value(self._price(p, prices)) for p in self.open_positions()), ZERO)

    def gross_exposure(self, prices: Mapping[str, Decimal]) -> Decimal:
        return sum((abs(p.market_value(self._price(p, prices))) for p in self.open_positions()), ZERO)

    def equity(self, prices: Mapping[str, Decimal]) -> Decimal:
        assert self.cash is not None
        return self.cash + self.market_value(prices)
