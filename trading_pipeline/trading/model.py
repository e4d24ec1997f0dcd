"""The order vocabulary of the trading domain: sides, order types, time in force, statuses and
the order request every broker accepts. Brokers, the ops store, risk and the API import it from
here (one place); the broker adapters translate it to and from their own."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"


class OrderStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # refused by the broker
    DENIED = "denied"  # stopped by our pre-trade risk checks; never sent to a broker
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    account: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.EXPIRED}
)


def to_decimal(x: Any) -> Decimal:
    """A price or quantity from a float column as the decimal a human reads: ``repr`` of the
    float (100.1, not 100.0999999999999943...). Decimals pass through unchanged."""
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))
