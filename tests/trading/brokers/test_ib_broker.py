"""IBBroker through the real ib_async client against the fake TWS (tests/stubs/fake_tws.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.fake_tws import ACCOUNT, FakeTWS, fake_tws
from trading_pipeline.trading.brokers.base import Broker, BrokerError
from trading_pipeline.trading.brokers.ib import IBBroker
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce

pytestmark = pytest.mark.timeout(60)

PRICE = 100.0


@pytest.fixture
def tws() -> Iterator[FakeTWS]:
    with fake_tws(prices={"AAA": PRICE, "BBB": 20.0}) as server:
        yield server
        assert server.unhandled == []  # every request ib_async sent got a real answer


@pytest.fixture
def broker(tws: FakeTWS) -> Iterator[IBBroker]:
    b = IBBroker(tws.host, tws.port, client_id=7, timeout=5, ack_timeout=2)
    yield b
    b.close()


def req(
    cid: str, side: Side = Side.BUY, qty: int = 10, limit: float | None = None, **kw
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        account=ACCOUNT,
        symbol=kw.pop("symbol", "AAA"),
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=Decimal(str(limit)) if limit is not None else None,
        time_in_force=kw.pop("tif", TimeInForce.DAY),
    )


def test_is_a_broker(broker: IBBroker) -> None:
    assert isinstance(broker, Broker)


def test_market_order_fills_with_commission_and_orderref(broker: IBBroker, tws: FakeTWS) -> None:
    order = broker.submit(req("sig-1"))
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == Decimal(10)
    assert order.avg_fill_price == Decimal(100)
    assert len(order.fills) == 1
    fill = order.fills[0]
    assert fill.client_order_id == "sig-1" and fill.commission == Decimal(1)
    assert fill.ts.tzinfo is None
    (server_order,) = tws.snapshot()
    assert server_order.order_ref == "sig-1"  # our id travels in IB's orderRef
    assert server_order.order_type == "MKT" and server_order.tif == "DAY"
    assert server_order.account == ACCOUNT
    assert order.broker_order_id == str(server_order.perm_id)
    assert broker.positions() == [pos for pos in broker.positions() if pos.symbol == "AAA"]
    (pos,) = broker.positions()
    assert (pos.symbol, pos.quantity, pos.avg_price) == ("AAA", Decimal(10), Decimal(100))
    acct = broker.account()
    assert acct.account == ACCOUNT
    assert acct.cash == Decimal(1_000_000 - 1000 - 1)


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (OrderRequest("stp-1", ACCOUNT, "AAA", Side.BUY, Decimal(5), OrderType.STOP, None, TimeInForce.GTC,
                      stop_price=Decimal("105.5")),
         ("STP", None, 105.5, None, "GTC")),
        (OrderRequest("stl-1", ACCOUNT, "AAA", Side.SELL, Decimal(5), OrderType.STOP_LIMIT, Decimal("94.5"), TimeInForce.DAY,
                      stop_price=Decimal(95)),
         ("STP LMT", 94.5, 95.0, None, "DAY")),
        (OrderRequest("trp-1", ACCOUNT, "AAA", Side.SELL, Decimal(5), OrderType.TRAILING_STOP, None, TimeInForce.GTC,
                      trail_percent=Decimal("2.5")),
         ("TRAIL", None, None, 2.5, "GTC")),
        (OrderRequest("tra-1", ACCOUNT, "AAA", Side.SELL, Decimal(5), OrderType.TRAILING_STOP, None, TimeInForce.GTC,
                      trail_amount=Decimal("1.25")),
         ("TRAIL", None, 1.25, None, "GTC")),
        (OrderRequest("opg-1", ACCOUNT, "AAA", Side.BUY, Decimal(5), OrderType.LIMIT, Decimal(90), TimeInForce.OPG),
         ("LMT", 90.0, None, None, "OPG")),
    ],
    ids=["stop", "stop_limit", "trail_percent", "trail_amount", "opg"],
)
def test_stop_types_and_opg_reach_tws_as_ib_orders(broker: IBBroker, tws: FakeTWS, request_: OrderRequest, wire: tuple) -> None:
    got = broker.submit(request_)
    assert got.status == OrderStatus.ACCEPTED and got.filled_quantity == 0  # a stop rests
    (server_order,) = tws.snapshot()
    assert server_order.order_ref == request_.client_order_id
    sent = (server_order.order_type, server_order.limit_price, server_order.aux_price,
            server_order.trailing_percent, server_order.tif)
    assert sent == wire


def test_contradictory_stop_terms_never_reach_tws(broker: IBBroker, tws: FakeTWS) -> None:
    bad = OrderRequest("bad-1", ACCOUNT, "AAA", Side.SELL, Decimal(5), OrderType.TRAILING_STOP, None, TimeInForce.GTC)
    with pytest.raises(BrokerError, match="exactly one of"):
        broker.submit(bad)
    assert tws.snapshot() == []


def test_limit_order_rests_until_price_crosses(broker: IBBroker, tws: FakeTWS) -> None:
    order = broker.submit(req("lim-1", limit=95.0, tif=TimeInForce.GTC))
    assert order.status == OrderStatus.ACCEPTED
    assert [o.client_order_id for o in broker.open_orders()] == ["lim-1"]
    assert tws.snapshot()[0].tif == "GTC" and tws.snapshot()[0].limit_price == 95.0
    tws.advance({"AAA": 94.5})
    done = broker.order_status("lim-1")
    assert done is not None and done.status == OrderStatus.FILLED
    assert done.avg_fill_price == Decimal("94.5")
    assert broker.open_orders() == []


def test_partial_fill_then_rest_on_advance(broker: IBBroker, tws: FakeTWS) -> None:
    tws.partial_fill_next(4)
    broker.submit(req("part-1"))
    part = broker.order_status("part-1")
    assert part is not None
    assert part.status == OrderStatus.PARTIALLY_FILLED
    assert part.filled_quantity == Decimal(4)
    assert "part-1" in {o.client_order_id for o in broker.open_orders()}
    tws.advance({"AAA": 101.0})
    done = broker.order_status("part-1")
    assert done is not None and done.status == OrderStatus.FILLED
    assert [f.quantity for f in done.fills] == [Decimal(4), Decimal(6)]
    assert done.avg_fill_price == Decimal("100.6")  # (4*100 + 6*101) / 10
    assert broker.positions()[0].quantity == Decimal(10)


def test_reject_raises_non_retryable_with_ib_message(broker: IBBroker, tws: FakeTWS) -> None:
    tws.reject_next_order("Insufficient buying power")
    with pytest.raises(BrokerError) as err:
        broker.submit(req("rej-1"))
    assert not err.value.retryable
    assert "201" in str(err.value) and "Insufficient buying power" in str(err.value)
    status = broker.order_status("rej-1")
    assert status is not None and status.status == OrderStatus.REJECTED
    # a retry does not place it again
    with pytest.raises(BrokerError):
        broker.submit(req("rej-1"))
    assert len(tws.snapshot()) == 1
    assert broker.positions() == []


def test_cancel_and_modify(broker: IBBroker, tws: FakeTWS) -> None:
    broker.submit(req("mod-1", limit=50.0, tif=TimeInForce.GTC))
    modified = broker.modify("mod-1", quantity=Decimal(12), limit_price=Decimal("51"))
    assert modified.quantity == Decimal(12) and modified.status == OrderStatus.ACCEPTED
    (server_order,) = tws.snapshot()
    assert (server_order.quantity, server_order.limit_price) == (12.0, 51.0)
    cancelled = broker.cancel("mod-1")
    assert cancelled.status == OrderStatus.CANCELLED
    with pytest.raises(BrokerError):
        broker.cancel("mod-1")
    with pytest.raises(BrokerError):
        broker.modify("mod-1", quantity=Decimal(1))
    with pytest.raises(BrokerError):
        broker.cancel("nope")
    assert broker.order_status("nope") is None


def test_modify_into_the_market_fills(broker: IBBroker, tws: FakeTWS) -> None:
    broker.submit(req("mod-2", limit=50.0, tif=TimeInForce.GTC))
    filled = broker.modify("mod-2", limit_price=Decimal("100"))
    after = broker.order_status("mod-2")
    assert after is not None and after.status == OrderStatus.FILLED, filled


def test_state_survives_a_new_broker_process(tws: FakeTWS) -> None:
    """A new process (fresh session) sees earlier orders, fills and positions via TWS."""
    first = IBBroker(tws.host, tws.port, client_id=7, timeout=5)
    first.submit(req("old-1"))
    first.submit(req("old-2", limit=10.0, tif=TimeInForce.GTC))
    first.close()
    second = IBBroker(tws.host, tws.port, client_id=7, timeout=5)
    try:
        old = second.order_status("old-1")
        assert old is not None and old.status == OrderStatus.FILLED
        assert old.fills and old.fills[0].quantity == Decimal(10)
        assert second.submit(req("old-1")).broker_order_id == old.broker_order_id
        assert [o.client_order_id for o in second.open_orders()] == ["old-2"]
        assert second.cancel("old-2").status == OrderStatus.CANCELLED
        assert len(tws.snapshot()) == 2
    finally:
        second.close()


def test_disconnect_mid_batch_then_reconnect_no_duplicate(broker: IBBroker, tws: FakeTWS) -> None:
    batch = [req(f"batch-{i}", qty=1 + i) for i in range(4)]
    broker.submit(batch[0])
    # the order reaches TWS (and fills there), but the socket dies before any reply
    tws.drop_after_next_order()
    second = broker.submit(batch[1])  # reconnects once and finds it by orderRef
    assert second.status == OrderStatus.FILLED
    tws.drop_connections()
    results = [broker.submit(r) for r in batch]  # the order job retries the whole batch
    assert tws.connections_accepted == 3
    for r, result in zip(batch, results, strict=True):
        assert len(tws.live_orders(r.client_order_id)) == 1, r.client_order_id
        assert result.status == OrderStatus.FILLED and result.filled_quantity == r.quantity
    assert broker.positions()[0].quantity == Decimal(1 + 2 + 3 + 4)


def test_tws_gone_is_retryable_with_help(tws: FakeTWS) -> None:
    broker = IBBroker(tws.host, tws.port, client_id=7, timeout=2)
    try:
        broker.submit(req("gone-1"))
        tws.stop()
        with pytest.raises(BrokerError) as err:
            broker.submit(req("gone-2"))
        assert err.value.retryable
        assert f"{tws.host}:{tws.port}" in str(err.value)
        assert "Start TWS or IB Gateway" in str(err.value)
    finally:
        broker.close()


def test_connection_refused(unused_port: int) -> None:
    broker = IBBroker("127.0.0.1", unused_port, client_id=7, timeout=2)
    try:
        with pytest.raises(BrokerError) as err:
            broker.account()
        assert err.value.retryable
        assert f"127.0.0.1:{unused_port}" in str(err.value)
    finally:
        broker.close()


def test_client_id_in_use_is_reported(broker: IBBroker, tws: FakeTWS) -> None:
    broker.account()
    twin = IBBroker(tws.host, tws.port, client_id=7, timeout=2, shared=False)  # another process
    try:
        with pytest.raises(BrokerError) as err:
            twin.account()
        assert "refused client id 7" in str(err.value) and "TRADING_IB_CLIENT_ID" in str(err.value)
    finally:
        twin.close()


def test_brokers_in_one_process_share_the_connection(broker: IBBroker, tws: FakeTWS) -> None:
    broker.submit(req("share-1"))
    other = IBBroker(tws.host, tws.port, client_id=7)
    assert other.order_status("share-1") is not None
    assert tws.connections_accepted == 1


def test_usable_from_threads_and_inside_a_running_loop(broker: IBBroker) -> None:
    """Dagster ops call from worker threads; FastAPI handlers run inside an event loop."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            broker.submit(req(f"thr-{i}", qty=1))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert broker.positions()[0].quantity == Decimal(5)

    async def in_loop() -> Decimal:
        return broker.account().cash

    assert asyncio.run(in_loop()) > 0


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_modify_of_terms_the_order_does_not_have_sends_nothing(broker: IBBroker, tws: FakeTWS) -> None:
    """Stops and trails are modified (tests/trading/brokers/test_live_modify_stops.py); on a
    limit order they are refused before anything is sent."""
    broker.submit(req("mod-3", limit=50.0, tif=TimeInForce.GTC))
    for terms, what in (({"stop_price": Decimal("49")}, "stop price"), ({"trail_percent": Decimal(2)}, "trail"),
                        ({"trail_amount": Decimal(1)}, "trail")):
        with pytest.raises(BrokerError, match=f"cannot set a {what} on LMT order"):
            broker.modify("mod-3", quantity=Decimal(11), **terms)
    (server_order,) = tws.snapshot()
    assert (server_order.quantity, server_order.limit_price) == (10.0, 50.0)
    got = broker.order_status("mod-3")
    assert got is not None and got.quantity == Decimal(10)
