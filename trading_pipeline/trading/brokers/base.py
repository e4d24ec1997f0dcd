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


# Brackets (an entry with a take-profit limit and a stop-loss stop, one-cancels-other) come in
# two kinds, and :func:`~trading_pipeline.trading.execution.submit_bracket` takes either:
#
# - **per order**: the broker sets ``supports_brackets = True`` and takes each exit through
#   ``submit`` (``OrderRequest.parent_client_order_id`` / ``oco_group`` link them; the paper
#   broker holds them until the entry fills);
# - **native**: the broker also has :meth:`NativeBrackets.submit_bracket`, which places all
#   three in one call (Alpaca ``order_class=bracket``, IB parent + children with ``parentId``
#   and one ``ocaGroup``). The exits keep our ids ``<entry>-tp`` / ``<entry>-sl``:
#   ``order_status``, ``cancel`` and ``open_orders`` answer for them under those ids, whatever
#   ids the broker gave its legs. Cancelling the entry cancels its working exits.
#
# A broker with neither refuses with :class:`BracketNotSupported`.


@runtime_checkable
class NativeBrackets(Protocol):
    """The optional native-bracket method of a :class:`Broker`."""

    def submit_bracket(
        self, entry: OrderRequest, take_profit: OrderRequest, stop_loss: OrderRequest
    ) -> tuple[BrokerOrder, BrokerOrder, BrokerOrder]:
        """Place entry, take-profit and stop-loss as one bracket; return the broker's view of
        (entry, take_profit, stop_loss) under our client ids.

        Idempotent like ``submit``: if the broker already has the entry's client_order_id, the
        existing bracket is returned and nothing new is placed. Raises :class:`BrokerError`
        (``retryable`` when the outcome is unknown: a retry looks the entry up first) for
        refusals, transport failures and replies that lack the legs."""
        ...


def native_brackets(broker: object) -> NativeBrackets | None:
    """The broker as :class:`NativeBrackets` when it places brackets in one call, else None."""
    return broker if callable(getattr(broker, "submit_bracket", None)) else None  # type: ignore[return-value]


def takes_brackets(broker: object) -> bool:
    """Whether the broker takes brackets at all (natively or per order)."""
    return bool(getattr(broker, "supports_brackets", False)) or native_brackets(broker) is not None


def refuse_stop_modify(broker: str, stop_price: Decimal | None, trail_percent: Decimal | None,
                       trail_amount: Decimal | None) -> None:
    """For a broker that can replace only quantity and limit price: raise
    :class:`ModifyNotSupported` (before anything is sent) when a stop price or trail is given.

    The paper, Alpaca and IB brokers replace stop prices and trails themselves and do not use
    this; Alpaca and IB raise :class:`ModifyNotSupported` only for switching a trailing stop
    between trail_percent and trail_amount."""
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
