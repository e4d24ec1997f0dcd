"""The broker protocol: what every execution client (paper, Alpaca, IB) offers.

Quantities and prices are ``Decimal``. ``client_order_id`` is ours and deterministic, so a
retried submit can be recognised by the broker and by the ops store (idempotency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from trading_pipeline.trading.model import OrderRequest, OrderStatus, Side


@dataclass(frozen=True)
class BrokerFill:
    fill_id: str
    client_order_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal
    ts: datetime


@dataclass(frozen=True)
class BrokerOrder:
    """The broker's view of one order."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    filled_quantity: Decimal
    status: OrderStatus
    avg_fill_price: Decimal | None = None
    reason: str | None = None
    fills: tuple[BrokerFill, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    quantity: Decimal
    avg_price: Decimal


@dataclass(frozen=True)
class BrokerAccount:
    account: str
    cash: Decimal
    equity: Decimal
    buying_power: Decimal


class BrokerError(RuntimeError):
    """The broker refused or failed a request. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ModifyNotSupported(BrokerError):
    """This broker cannot (yet) replace these terms of a working order; nothing was sent."""


class BracketNotSupported(BrokerError):
    """This broker cannot take a bracket (entry with take-profit and stop-loss exits) yet;
    raised before anything is stored or sent."""


def refuse_stop_modify(broker: str, stop_price: Decimal | None, trail_percent: Decimal | None,
                       trail_amount: Decimal | None) -> None:
    if stop_price is not None or trail_percent is not None or trail_amount is not None:
        raise ModifyNotSupported(f"modifying stop_price or a trail is not supported by this broker ({broker}) yet")


@runtime_checkable
class Broker(Protocol):
    name: str

    def submit(self, order: OrderRequest) -> BrokerOrder:
        """Submit once: a second submit with the same client_order_id returns the first order."""
        ...

    def cancel(self, client_order_id: str) -> BrokerOrder: ...

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_percent: Decimal | None = None,
        trail_amount: Decimal | None = None,
    ) -> BrokerOrder:
        """Replace a working order's terms (None: unchanged); :class:`ModifyNotSupported` for
        terms this broker cannot replace yet."""
        ...

    def order_status(self, client_order_id: str) -> BrokerOrder | None: ...

    def open_orders(self) -> list[BrokerOrder]: ...

    def positions(self) -> list[BrokerPosition]: ...

    def account(self) -> BrokerAccount: ...
