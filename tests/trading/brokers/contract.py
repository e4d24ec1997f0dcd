"""A reusable contract test suite for anything implementing the ``Broker`` protocol.

Every adapter (paper, Alpaca, IB) must behave the same way as seen through
:class:`trading_pipeline.trading.brokers.base.Broker`; these tests pin that behaviour down.

How to use it for a new adapter (put the module beside this one, e.g.
``tests/trading/brokers/test_alpaca_contract.py``)::

    import pytest
    from .contract import BrokerContract

    class TestAlpacaContract(BrokerContract):
        symbol = "GOOG"              # a symbol the broker/stub can trade
        reference_price = Decimal("100")   # roughly the current price of ``symbol``

        @pytest.fixture
        def broker(self, tmp_path):       # a FRESH broker: no orders, no positions
            ...                           # e.g. start a local protocol stub and connect
            yield AlpacaBroker(...)

        def advance_market(self, broker) -> None:
            ...                           # make pending MARKET orders fill (see below)

Hooks (override in the subclass):

- ``broker`` fixture (required): yields a broker for ONE account with enough cash to buy
  ``quantity`` shares of ``symbol`` several times, and no open orders or positions.
- ``advance_market(broker)`` (required): move the market forward so that every pending
  market order fills completely (paper: append a bar and call ``process_bars()``; a stub:
  tell it to fill). Resting limit orders priced at ``far_buy_limit()`` must NOT fill.
- ``symbol``, ``reference_price``, ``quantity``, ``account`` (class attributes): what to
  trade; ``account`` is put in every ``OrderRequest``.
- ``far_buy_limit()``: a buy limit price that cannot fill during the test (default: half of
  ``reference_price``).

The suite only uses the protocol's public methods and dataclasses; it states what the
platform relies on: idempotent submit by client_order_id, ``order_status`` returning
``None`` for unknown ids, resting limit orders visible in ``open_orders`` until cancelled,
``cancel``/``modify`` raising :class:`BrokerError` for unknown or finished orders, fills
summing to the filled quantity, and positions following fills.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from trading_pipeline.trading.brokers.base import (
    Broker,
    BrokerAccount,
    BrokerError,
    BrokerOrder,
    BrokerPosition,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce

_OPEN = {OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}


class BrokerContract:
    """Subclass with a ``broker`` fixture and ``advance_market``; see the module docstring."""

    symbol: str = "AAA"
    reference_price: Decimal = Decimal("100")
    quantity: Decimal = Decimal("10")
    account: str = "contract"

    # ---- hooks ---------------------------------------------------------------------------
    @pytest.fixture
    def broker(self) -> Broker:  # pragma: no cover - must be overridden
        raise NotImplementedError("subclass BrokerContract and provide a `broker` fixture")

    def advance_market(self, broker: Broker) -> None:  # pragma: no cover - must be overridden
        raise NotImplementedError("subclass BrokerContract and implement advance_market()")

    def far_buy_limit(self) -> Decimal:
        return (self.reference_price / 2).quantize(Decimal("0.01"))

    # ---- helpers -------------------------------------------------------------------------
    def request(
        self,
        side: Side = Side.BUY,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        client_order_id: str | None = None,
        time_in_force: TimeInForce | None = None,
    ) -> OrderRequest:
        return OrderRequest(
            client_order_id=client_order_id or f"ct-{uuid.uuid4().hex[:16]}",
            account=self.account,
            symbol=self.symbol,
            side=side,
            quantity=quantity if quantity is not None else self.quantity,
            order_type=OrderType.LIMIT if limit_price is not None else OrderType.MARKET,
            limit_price=limit_price,
            time_in_force=time_in_force
            or (TimeInForce.GTC if limit_price is not None else TimeInForce.DAY),
        )

    def position_qty(self, broker: Broker) -> Decimal:
        return sum((p.quantity for p in broker.positions() if p.symbol == self.symbol), Decimal(0))

    # ---- the contract --------------------------------------------------------------------
    def test_implements_protocol(self, broker: Broker) -> None:
        assert isinstance(broker, Broker)
        assert isinstance(broker.name, str) and broker.name

    def test_account_snapshot(self, broker: Broker) -> None:
        acct = broker.account()
        assert isinstance(acct, BrokerAccount)
        assert isinstance(acct.cash, Decimal) and acct.cash > 0
        assert acct.equity >= 0

    def test_submit_market_order_returns_broker_order(self, broker: Broker) -> None:
        req = self.request()
        order = broker.submit(req)
        assert isinstance(order, BrokerOrder)
        assert order.client_order_id == req.client_order_id
        assert order.broker_order_id
        assert order.symbol == self.symbol
        assert order.side == Side.BUY
        assert order.quantity == self.quantity
        assert order.status != OrderStatus.REJECTED, order.reason

    def test_submit_is_idempotent_by_client_order_id(self, broker: Broker) -> None:
        req = self.request(limit_price=self.far_buy_limit())
        first = broker.submit(req)
        second = broker.submit(req)
        assert second.broker_order_id == first.broker_order_id
        matching = [o for o in broker.open_orders() if o.client_order_id == req.client_order_id]
        assert len(matching) == 1

    def test_order_status_unknown_is_none(self, broker: Broker) -> None:
        assert broker.order_status(f"never-{uuid.uuid4().hex[:8]}") is None

    def test_order_status_known(self, broker: Broker) -> None:
        req = self.request(limit_price=self.far_buy_limit())
        broker.submit(req)
        status = broker.order_status(req.client_order_id)
        assert status is not None
        assert status.client_order_id == req.client_order_id
        assert status.status in _OPEN

    def test_resting_limit_is_open_then_cancelled(self, broker: Broker) -> None:
        req = self.request(limit_price=self.far_buy_limit())
        broker.submit(req)
        self.advance_market(broker)
        assert req.client_order_id in {o.client_order_id for o in broker.open_orders()}
        cancelled = broker.cancel(req.client_order_id)
        assert cancelled.status == OrderStatus.CANCELLED
        assert req.client_order_id not in {o.client_order_id for o in broker.open_orders()}
        after = broker.order_status(req.client_order_id)
        assert after is not None and after.status == OrderStatus.CANCELLED

    def test_cancel_unknown_raises(self, broker: Broker) -> None:
        with pytest.raises(BrokerError):
            broker.cancel(f"never-{uuid.uuid4().hex[:8]}")

    def test_modify_resting_limit_quantity(self, broker: Broker) -> None:
        req = self.request(limit_price=self.far_buy_limit())
        broker.submit(req)
        new_qty = self.quantity + 1
        modified = broker.modify(req.client_order_id, quantity=new_qty)
        assert modified.quantity == new_qty
        assert modified.status in _OPEN
        status = broker.order_status(req.client_order_id)
        assert status is not None and status.quantity == new_qty

    def test_market_order_fills_after_market_advances(self, broker: Broker) -> None:
        req = self.request()
        broker.submit(req)
        self.advance_market(broker)
        order = broker.order_status(req.client_order_id)
        assert order is not None
        assert order.status == OrderStatus.FILLED, order.reason
        assert order.filled_quantity == self.quantity
        assert order.avg_fill_price is not None and order.avg_fill_price > 0
        assert sum((f.quantity for f in order.fills), Decimal(0)) == self.quantity
        assert all(f.client_order_id == req.client_order_id for f in order.fills)
        assert req.client_order_id not in {o.client_order_id for o in broker.open_orders()}

    def test_position_follows_fills(self, broker: Broker) -> None:
        before = self.position_qty(broker)
        broker.submit(self.request(Side.BUY))
        self.advance_market(broker)
        assert self.position_qty(broker) == before + self.quantity
        pos = [p for p in broker.positions() if p.symbol == self.symbol]
        assert all(isinstance(p, BrokerPosition) for p in pos)
        assert pos and pos[0].avg_price > 0
        broker.submit(self.request(Side.SELL))
        self.advance_market(broker)
        assert self.position_qty(broker) == before

    def test_cash_decreases_after_buy(self, broker: Broker) -> None:
        cash_before = broker.account().cash
        broker.submit(self.request(Side.BUY))
        self.advance_market(broker)
        assert broker.account().cash < cash_before

    def test_cancel_filled_order_raises(self, broker: Broker) -> None:
        req = self.request()
        broker.submit(req)
        self.advance_market(broker)
        with pytest.raises(BrokerError):
            broker.cancel(req.client_order_id)

    def test_resubmit_after_fill_does_not_trade_twice(self, broker: Broker) -> None:
        req = self.request()
        broker.submit(req)
        self.advance_market(broker)
        qty = self.position_qty(broker)
        again = broker.submit(req)
        assert again.status == OrderStatus.FILLED
        self.advance_market(broker)
        assert self.position_qty(broker) == qty
