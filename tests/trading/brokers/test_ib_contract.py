"""IBBroker passes the shared Broker contract suite, against the fake TWS."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.fake_tws import FakeTWS, fake_tws
from trading_pipeline.trading.brokers.base import Broker
from trading_pipeline.trading.brokers.ib import IBBroker

from .contract import BrokerContract

pytestmark = pytest.mark.timeout(60)


class TestIBBrokerContract(BrokerContract):
    symbol = "AAA"
    reference_price = Decimal("100")
    account = "contract"  # not an IB account id: the adapter leaves IB's default account

    @pytest.fixture
    def broker(self) -> Iterator[IBBroker]:
        # pytest makes one instance per test, so the fake TWS can live on ``self``
        with fake_tws(prices={self.symbol: float(self.reference_price)}) as server:
            self.tws: FakeTWS = server
            broker = IBBroker(server.host, server.port, client_id=7, timeout=5, ack_timeout=2)
            yield broker
            broker.close()

    def advance_market(self, broker: Broker) -> None:
        # the fake fills market orders on arrival; advancing fills anything still pending
        # (partial remainders, limits the price has crossed) at the unchanged price
        self.tws.advance()
