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
    STOP = "stop"  # a market order once the market trades through stop_price
    STOP_LIMIT = "stop_limit"  # a limit order (limit_price) once the market trades through stop_price
    TRAILING_STOP = "trailing_stop"  # a stop that follows the best price by trail_percent or trail_amount

    @property
    def is_stop(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP)


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"  # what does not fill at once is cancelled
    OPG = "opg"  # fills only at the session's open, else expires


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
    stop_price: Decimal | None = None
    trail_percent: Decimal | None = None
    trail_amount: Decimal | None = None
    parent_client_order_id: str | None = None  # a bracket's exit: the entry it closes
    oco_group: str | None = None  # a bracket's exits: filling one cancels the others

    def problem(self, reference: Decimal | None = None) -> str | None:
        """Why these terms are not an order (None: they are); see :func:`order_problem`."""
        return order_problem(
            self.order_type, self.side, limit_price=self.limit_price, stop_price=self.stop_price,
            trail_percent=self.trail_percent, trail_amount=self.trail_amount,
            time_in_force=self.time_in_force, reference=reference,
        )


class InvalidOrder(ValueError):
    """An order's terms contradict each other (or the market): refused before risk, nothing stored."""


def order_problem(
    order_type: OrderType | str,
    side: Side | str,
    *,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    trail_percent: Decimal | None = None,
    trail_amount: Decimal | None = None,
    time_in_force: TimeInForce | str = TimeInForce.DAY,
    reference: Decimal | None = None,
) -> str | None:
    """The one check of an order's terms (the API, the CLI, the order model and the brokers all
    call it): which prices each type needs and refuses, which time in force it takes, and with
    ``reference`` (the last price) that a stop is on the right side of the market. None if fine."""
    t, sd, tif = OrderType(order_type), Side(side), TimeInForce(time_in_force)
    needs_limit = t in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = t in (OrderType.STOP, OrderType.STOP_LIMIT)
    if needs_limit and limit_price is None:
        return f"a {t.value} order needs a positive limit_price"
    if not needs_limit and limit_price is not None:
        return f"a {t.value} order has no limit_price" + (" (use stop_limit for a stop with a limit)" if t == OrderType.STOP else "")
    if needs_stop and stop_price is None:
        return f"a {t.value} order needs a positive stop_price"
    if not needs_stop and stop_price is not None:
        return f"a {t.value} order has no stop_price"
    for name, value in (("limit_price", limit_price), ("stop_price", stop_price)):
        if value is not None and value <= 0:
            return f"{name} must be > 0, got {value}"
    if t == OrderType.TRAILING_STOP:
        if (trail_percent is None) == (trail_amount is None):
            return "a trailing_stop order needs exactly one of trail_percent and trail_amount"
        if trail_percent is not None and not 0 < trail_percent < 100:
            return f"trail_percent must be > 0 and < 100, got {trail_percent}"
        if trail_amount is not None and trail_amount <= 0:
            return f"trail_amount must be > 0, got {trail_amount}"
    elif trail_percent is not None or trail_amount is not None:
        return f"a {t.value} order has no trail_percent or trail_amount"
    if t.is_stop and tif not in (TimeInForce.DAY, TimeInForce.GTC):
        return f"a {t.value} order takes time in force day or gtc, not {tif.value}"
    if needs_stop and reference is not None and stop_price is not None:
        if sd == Side.BUY and stop_price <= reference:
            return f"a buy stop must be above the market: stop_price {stop_price} <= last price {reference}"
        if sd == Side.SELL and stop_price >= reference:
            return f"a sell stop must be below the market: stop_price {stop_price} >= last price {reference}"
    return None


def bracket_problem(
    order_type: OrderType | str,
    side: Side | str,
    *,
    take_profit_price: Decimal | None,
    stop_loss_price: Decimal | None,
    limit_price: Decimal | None = None,
    reference: Decimal | None = None,
) -> tuple[str, str] | None:
    """Why a bracket (take-profit and stop-loss exits) does not fit its entry, as (field, reason);
    None if it does. The entry reference is its limit price, or the last close for a market entry:
    a buy's take-profit must be above it and its stop-loss below it (a sell: the mirror)."""
    t, sd = OrderType(order_type), Side(side)
    for name, value in (("take_profit_price", take_profit_price), ("stop_loss_price", stop_loss_price)):
        if value is None:
            return name, f"a bracket needs a positive {name}"
        if not value.is_finite() or value <= 0:
            return name, f"{name} must be > 0, got {value}"
    if t not in (OrderType.MARKET, OrderType.LIMIT):
        return "order_type", f"a bracket's entry is a market or limit order, not {t.value}"
    ref = limit_price if t == OrderType.LIMIT else reference
    if ref is None:
        return "take_profit_price", "no entry reference to check the bracket against (no limit price and no last close)"
    assert take_profit_price is not None and stop_loss_price is not None
    above, below = (take_profit_price, stop_loss_price) if sd == Side.BUY else (stop_loss_price, take_profit_price)
    what = "limit price" if t == OrderType.LIMIT else "last close"
    if above <= ref:
        name = "take_profit_price" if sd == Side.BUY else "stop_loss_price"
        return name, f"a {sd.value} bracket's {name} must be above the entry's {what} {ref}, got {above}"
    if below >= ref:
        name = "stop_loss_price" if sd == Side.BUY else "take_profit_price"
        return name, f"a {sd.value} bracket's {name} must be below the entry's {what} {ref}, got {below}"
    return None


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.EXPIRED}
)


def to_decimal(x: Any) -> Decimal:
    """A price or quantity from a float column as the decimal a human reads: ``repr`` of the
    float (100.1, not 100.0999999999999943...). Decimals pass through unchanged."""
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))
