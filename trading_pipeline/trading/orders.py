"""Orders as we track them: an explicit state machine and deterministic client order ids.

The broker has its own view (:class:`~trading_pipeline.trading.brokers.base.BrokerOrder`); this is
ours, persisted in the ops store, so that every status change is checked here first and an
impossible one (a fill on a cancelled order, say) fails loudly instead of corrupting state.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from trading_pipeline.marketdata.bars import naive_utc as to_naive_utc  # noqa: F401 - re-exported
from trading_pipeline.marketdata.bars import utcnow
from trading_pipeline.trading.model import (
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    order_problem,
)

OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})

# Legal transitions. Terminal states have none. PARTIALLY_FILLED -> PARTIALLY_FILLED is a
# further partial fill.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.ACCEPTED, OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.CANCELLED}),
    OrderStatus.ACCEPTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.DENIED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class IllegalTransition(ValueError):
    """An order was asked to move to a state it cannot reach from where it is."""


def client_order_id(
    strategy: str, account: str, symbol: str, signal_ts: datetime | str, side: Side | str
) -> str:
    """Deterministic id for the order one signal produces: same inputs, same id, always.

    A retried job recomputes the same id, so the ops store and the broker both recognise the
    order as already submitted. ``tp-`` + 20 lowercase base32 characters (100 bits of
    sha256): short and safe for every broker (Alpaca allows 128 chars, IB's orderRef more).
    """
    if isinstance(signal_ts, datetime):
        ts_text = to_naive_utc(signal_ts).isoformat(timespec="microseconds")
    else:
        ts_text = to_naive_utc(datetime.fromisoformat(str(signal_ts))).isoformat(
            timespec="microseconds"
        )
    key = "|".join((strategy, account, symbol.upper(), ts_text, Side(side).value))
    digest = hashlib.sha256(key.encode()).digest()
    return "tp-" + base64.b32encode(digest).decode().lower()[:20]


@dataclass(frozen=True)
class OrderEvent:
    """One row of an order's history: what changed, when and why."""

    client_order_id: str
    ts: datetime
    from_status: OrderStatus | None  # None for the "created" event
    to_status: OrderStatus
    kind: str  # "transition", "fill", "cancel_request", "modify_request", "modified", "note"
    reason: str


@dataclass
class Order:
    client_order_id: str
    account: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    strategy: str = "manual"
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: Decimal = Decimal(0)
    avg_fill_price: Decimal | None = None
    broker: str | None = None
    broker_order_id: str | None = None
    signal_ts: datetime | None = None
    reason: str | None = None
    cancel_requested: bool = False
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    stop_price: Decimal | None = None
    trail_percent: Decimal | None = None
    trail_amount: Decimal | None = None
    parent_client_order_id: str | None = None  # a bracket exit: its entry
    oco_group: str | None = None  # a bracket's exits: filling one cancels the other
    # the bar size of the signal a scan order came from (1d, 1m..1h); None for a manual order.
    # An order run advances only the working orders of its own bar size (defs/orders.py).
    timeframe: str | None = None

    def __post_init__(self) -> None:
        self.side = Side(self.side)
        self.order_type = OrderType(self.order_type)
        self.time_in_force = TimeInForce(self.time_in_force)
        self.status = OrderStatus(self.status)
        if self.quantity <= 0:
            raise ValueError(f"order {self.client_order_id}: quantity must be > 0, got {self.quantity}")
        problem = order_problem(
            self.order_type, self.side, limit_price=self.limit_price, stop_price=self.stop_price,
            trail_percent=self.trail_percent, trail_amount=self.trail_amount, time_in_force=self.time_in_force,
        )
        if problem:
            raise ValueError(f"order {self.client_order_id}: {problem}")

    @classmethod
    def from_request(
        cls,
        request: OrderRequest,
        *,
        strategy: str = "manual",
        signal_ts: datetime | None = None,
        broker: str | None = None,
        now: datetime | None = None,
        timeframe: str | None = None,
    ) -> Order:
        now = now or utcnow()
        return cls(
            client_order_id=request.client_order_id,
            account=request.account,
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            limit_price=request.limit_price,
            time_in_force=request.time_in_force,
            stop_price=request.stop_price,
            trail_percent=request.trail_percent,
            trail_amount=request.trail_amount,
            parent_client_order_id=request.parent_client_order_id,
            oco_group=request.oco_group,
            strategy=strategy,
            signal_ts=signal_ts,
            broker=broker,
            timeframe=timeframe,
            created_at=now,
            updated_at=now,
        )

    def record(self) -> dict[str, Any]:
        """Every field as a flat dict, enums as their values: for the store, the CLI and the API."""
        return {
            f.name: (v.value if isinstance(v := getattr(self, f.name), Enum) else v) for f in fields(self)
        }

    def to_request(self) -> OrderRequest:
        return OrderRequest(
            client_order_id=self.client_order_id,
            account=self.account,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            order_type=self.order_type,
            limit_price=self.limit_price,
            time_in_force=self.time_in_force,
            stop_price=self.stop_price,
            trail_percent=self.trail_percent,
            trail_amount=self.trail_amount,
            parent_client_order_id=self.parent_client_order_id,
            oco_group=self.oco_group,
        )

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    def copy(self) -> Order:
        return replace(self)

    def _event(self, prev: OrderStatus, kind: str, reason: str, now: datetime | None) -> OrderEvent:
        self.updated_at = now or utcnow()
        return OrderEvent(self.client_order_id, self.updated_at, prev, self.status, kind, reason)

    def transition(self, to: OrderStatus | str, reason: str, now: datetime | None = None) -> OrderEvent:
        """Move to ``to`` if the state machine allows it, else raise :class:`IllegalTransition`."""
        to = OrderStatus(to)
        if to not in TRANSITIONS[self.status]:
            raise IllegalTransition(
                f"order {self.client_order_id}: cannot go from {self.status} to {to} ({reason})"
            )
        if to in (OrderStatus.FILLED,) and self.filled_quantity != self.quantity:
            raise IllegalTransition(
                f"order {self.client_order_id}: cannot be filled with {self.filled_quantity} "
                f"of {self.quantity} filled; record the fills first"
            )
        prev, self.status = self.status, to
        if to in (OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
            self.reason = reason
        return self._event(prev, "transition", reason, now)

    def apply_fill(self, quantity: Decimal, price: Decimal, now: datetime | None = None) -> OrderEvent:
        """Add a fill: updates filled quantity, average price and status (partial or filled)."""
        if quantity <= 0:
            raise ValueError(f"order {self.client_order_id}: fill quantity must be > 0")
        if self.status not in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            raise IllegalTransition(
                f"order {self.client_order_id}: cannot fill an order that is {self.status}"
            )
        if self.filled_quantity + quantity > self.quantity:
            raise IllegalTransition(
                f"order {self.client_order_id}: fill of {quantity} would overfill "
                f"({self.filled_quantity} of {self.quantity} already filled)"
            )
        prev_value = (self.avg_fill_price or Decimal(0)) * self.filled_quantity
        self.filled_quantity += quantity
        self.avg_fill_price = (prev_value + price * quantity) / self.filled_quantity
        prev = self.status
        self.status = (
            OrderStatus.FILLED if self.filled_quantity == self.quantity else OrderStatus.PARTIALLY_FILLED
        )
        return self._event(prev, "fill", f"filled {quantity} @ {price}", now)

    def request_cancel(self, reason: str = "cancel requested", now: datetime | None = None) -> OrderEvent:
        if not self.is_open:
            raise IllegalTransition(f"order {self.client_order_id}: cannot cancel, it is {self.status}")
        self.cancel_requested = True
        return self._event(self.status, "cancel_request", reason, now)

    def request_modify(
        self,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        now: datetime | None = None,
    ) -> OrderEvent:
        """Change size or limit of a working order; never below what has already filled."""
        if not self.is_open:
            raise IllegalTransition(f"order {self.client_order_id}: cannot modify, it is {self.status}")
        if self.cancel_requested:
            raise IllegalTransition(f"order {self.client_order_id}: cannot modify, a cancel is pending")
        changes = []
        if quantity is not None:
            if quantity <= self.filled_quantity:
                raise IllegalTransition(
                    f"order {self.client_order_id}: new quantity {quantity} must exceed "
                    f"the filled {self.filled_quantity}"
                )
            changes.append(f"quantity {self.quantity} -> {quantity}")
            self.quantity = quantity
        if limit_price is not None:
            if self.order_type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
                raise IllegalTransition(f"order {self.client_order_id}: a {self.order_type.value} order has no limit")
            if limit_price <= 0:
                raise ValueError("limit_price must be > 0")
            changes.append(f"limit {self.limit_price} -> {limit_price}")
            self.limit_price = limit_price
        return self._event(self.status, "modify_request", "; ".join(changes) or "no change", now)

    def modify(
        self,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_percent: Decimal | None = None,
        trail_amount: Decimal | None = None,
        now: datetime | None = None,
    ) -> OrderEvent:
        """Change a working order's terms (``trading order modify``, ``PATCH /orders/{id}``): an
        event of kind ``modified`` naming each old and new term. A trailing stop given one trail
        drops the other. Raises :class:`IllegalTransition` for an order that is not working (or
        a new quantity not above the filled part) and :class:`~trading_pipeline.trading.model.InvalidOrder`
        for terms :func:`~trading_pipeline.trading.model.order_problem` refuses; the order is
        unchanged then."""
        from trading_pipeline.trading.model import InvalidOrder

        if not self.is_open:
            raise IllegalTransition(f"order {self.client_order_id}: cannot modify, it is {self.status}")
        if self.cancel_requested:
            raise IllegalTransition(f"order {self.client_order_id}: cannot modify, a cancel is pending")
        new = modified_terms(self, quantity=quantity, limit_price=limit_price, stop_price=stop_price,
                             trail_percent=trail_percent, trail_amount=trail_amount)
        if new["quantity"] <= self.filled_quantity:
            raise IllegalTransition(
                f"order {self.client_order_id}: new quantity {new['quantity']} must exceed the filled {self.filled_quantity}"
            )
        problem = order_problem(self.order_type, self.side, limit_price=new["limit_price"], stop_price=new["stop_price"],
                                trail_percent=new["trail_percent"], trail_amount=new["trail_amount"],
                                time_in_force=self.time_in_force)
        if problem:
            raise InvalidOrder(problem)
        changes = [f"{k} {getattr(self, k)} -> {v}" for k, v in new.items() if getattr(self, k) != v]
        if not changes:
            raise InvalidOrder("nothing to modify: give a quantity, limit_price, stop_price, trail_percent or trail_amount that differs")
        for k, v in new.items():
            setattr(self, k, v)
        return self._event(self.status, "modified", "modified: " + "; ".join(changes), now)

    def note(self, reason: str, now: datetime | None = None) -> OrderEvent:
        """An event without a status change (e.g. a broker error with an unknown outcome)."""
        self.reason = reason
        return self._event(self.status, "note", reason, now)


MODIFIABLE = ("quantity", "limit_price", "stop_price", "trail_percent", "trail_amount")


def modified_terms(order: Order, **changes: Decimal | None) -> dict[str, Decimal | None]:
    """The terms ``order`` has once ``changes`` (None: unchanged) apply; a new trail_percent
    replaces a trail_amount and the other way round."""
    new = {k: getattr(order, k) for k in MODIFIABLE}
    new.update({k: v for k, v in changes.items() if v is not None})
    if changes.get("trail_percent") is not None and changes.get("trail_amount") is None:
        new["trail_amount"] = None
    if changes.get("trail_amount") is not None and changes.get("trail_percent") is None:
        new["trail_percent"] = None
    return new
