"""The Alpaca adapter passes the same Broker contract as the paper broker, against the stub."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.alpaca_fixtures import STUB_KEY, STUB_SECRET
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.trading.brokers.alpaca import AlpacaBroker
from trading_pipeline.trading.brokers.base import Broker

from .contract import BrokerContract


class TestAlpacaContract(BrokerContract):
    symbol = "GOOG"
    reference_price = Decimal("100")

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        with AlpacaStub(STUB_KEY, STUB_SECRET, cash=Decimal("100000")) as stub:
            stub.set_price(self.symbol, self.reference_price)
            broker = AlpacaBroker(STUB_KEY, STUB_SECRET, url_override=stub.url, cancel_wait=0.5)
            # the contract hands advance_market() only the broker: remember its stub
            _STUBS[id(broker)] = stub
            try:
                yield broker
            finally:
                _STUBS.pop(id(broker), None)

    def advance_market(self, broker: Broker) -> None:
        _STUBS[id(broker)].advance()


_STUBS: dict[int, AlpacaStub] = {}
