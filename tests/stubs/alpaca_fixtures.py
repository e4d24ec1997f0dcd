"""pytest fixtures around :class:`AlpacaStub`; test modules import the ones they use.

A plain module (not a conftest) so the Alpaca fixtures stay out of other suites' way:
``from tests.stubs.alpaca_fixtures import alpaca_stub, alpaca_broker  # noqa: F401``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.marketdata.sources.alpaca import AlpacaBarSource
from trading_pipeline.trading.brokers.alpaca import AlpacaBroker

STUB_KEY = "stub-key"
STUB_SECRET = "stub-secret"


@pytest.fixture
def alpaca_stub() -> Iterator[AlpacaStub]:
    """A fresh stub (no bars, no orders, $100k cash) on a free 127.0.0.1 port."""
    with AlpacaStub(STUB_KEY, STUB_SECRET, cash=Decimal("100000")) as stub:
        yield stub


@pytest.fixture
def alpaca_source(alpaca_stub: AlpacaStub) -> AlpacaBarSource:
    return AlpacaBarSource(STUB_KEY, STUB_SECRET, url_override=alpaca_stub.url)


@pytest.fixture
def alpaca_broker(alpaca_stub: AlpacaStub) -> AlpacaBroker:
    return AlpacaBroker(STUB_KEY, STUB_SECRET, url_override=alpaca_stub.url, cancel_wait=0.5)


@pytest.fixture
def dead_url() -> str:
    """A 127.0.0.1 URL with nothing listening (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
