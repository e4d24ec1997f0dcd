"""Modifying stop prices and trails of working orders at Alpaca and IB (issue 14), through
``execution.modify_order`` with a real ops store, against the Alpaca REST stub (``PATCH
/v2/orders/{id}`` with ``stop_price`` / ``limit_price`` / ``trail``) and the fake TWS (placeOrder
again with the order's id and new ``auxPrice`` / ``lmtPrice`` / ``trailingPercent``). Nothing of
our own code is mocked; the stubs speak the brokers' protocols."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.alpaca_fixtures import alpaca_broker, alpaca_stub  # noqa: F401
from tests.stubs.alpaca_stub import AlpacaStub, StubOrder
from tests.stubs.fake_tws import ACCOUNT, FakeOrder, FakeTWS, fake_tws
from trading_pipeline.trading.brokers.alpaca import AlpacaBroker
from trading_pipeline.trading.brokers.base import BrokerError, ModifyNotSupported
from trading_pipeline.trading.brokers.ib import IBBroker
from trading_pipeline.trading.execution import (
    modify_order,
    submit_bracket,
    submit_order,
    sync_open_orders,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.store import OpsStore

pytestmark = pytest.mark.timeout(120)

D = Decimal


def stop(coid: str, account: str, symbol: str, stop_price: str, limit: str | None = None) -> OrderRequest:
    kind = OrderType.STOP_LIMIT if limit else OrderType.STOP
    return OrderRequest(coid, account, symbol, Side.SELL, D(10), kind, D(limit) if limit else None, TimeInForce.GTC,
                        stop_price=D(stop_price))


def trailing(coid: str, account: str, symbol: str, **trail: Decimal) -> OrderRequest:
    return OrderRequest(coid, account, symbol, Side.SELL, D(10), OrderType.TRAILING_STOP, None, TimeInForce.GTC,
                        **trail)


def place(store: OpsStore, broker, risk_engine, request: OrderRequest) -> None:
    res = submit_order(request, broker=broker, store=store, risk_engine=risk_engine, prices={request.symbol: D(100)})
    assert res.action == "submitted", res


def modify(store: OpsStore, broker, risk_engine, coid: str, symbol: str, **terms: Decimal):
    return modify_order(coid, broker=broker, store=store, risk_engine=risk_engine, prices={symbol: D(100)}, **terms)


def stored(store: OpsStore, coid: str) -> tuple:
    """Our order's terms and its event log: what a refused modify must leave alone."""
    o = store.get_order(coid)
    assert o is not None
    return (o.quantity, o.limit_price, o.stop_price, o.trail_percent, o.trail_amount, o.status,
            [(e.kind, e.reason) for e in store.order_events(coid)])


def last_event(store: OpsStore, coid: str) -> str:
    ev = store.order_events(coid)[-1]
    assert ev.kind == "modified"
    return ev.reason or ""


# ---- Alpaca ------------------------------------------------------------------------------------


@pytest.fixture
def alpaca(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> tuple[AlpacaStub, AlpacaBroker]:
    alpaca_stub.set_price("AAPL", "100")
    return alpaca_stub, alpaca_broker


def live(stub: AlpacaStub, coid: str) -> StubOrder:
    """The order Alpaca works now for the one it took under ``coid`` (after any replaces)."""
    order = stub.order(coid)
    while order.replaced_by is not None:
        order = stub.orders[order.replaced_by]
    return order


def patches(stub: AlpacaStub) -> list[tuple[str, dict]]:
    return [(p.rsplit("/", 1)[-1], b) for m, p, b in stub.bodies if m == "PATCH"]


def test_alpaca_stop_price_is_replaced_and_triggers_there(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    place(store, broker, risk_engine, stop("s", "main", "AAPL", "95"))
    old_id = stub.order("s").id
    res = modify(store, broker, risk_engine, "s", "AAPL", stop_price=D(93))
    assert res.action == "modified" and res.order.stop_price == D(93)
    assert patches(stub) == [(old_id, {"stop_price": 93.0})]
    assert "stop_price 95 -> 93" in last_event(store, "s")
    new = live(stub, "s")
    assert (new.stop_price, new.replaces, stub.orders[old_id].status) == (D(93), old_id, "replaced")
    assert broker.order_status("s").broker_order_id == new.id  # type: ignore[union-attr]
    stub.set_price("AAPL", "94")  # under the old stop, above the new one
    assert stub.advance() == 0
    stub.set_price("AAPL", "92.5")
    assert stub.advance() == 1
    sync_open_orders(store, broker)
    assert store.get_order("s").status == OrderStatus.FILLED  # type: ignore[union-attr]


def test_alpaca_stop_limit_gets_both_prices(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    place(store, broker, risk_engine, stop("sl", "main", "AAPL", "95", limit="94.5"))
    res = modify(store, broker, risk_engine, "sl", "AAPL", stop_price=D(93), limit_price=D("92.5"))
    assert res.action == "modified"
    [(_, body)] = patches(stub)
    assert body == {"stop_price": 93.0, "limit_price": 92.5}
    new = live(stub, "sl")
    assert (new.type, new.stop_price, new.limit_price) == ("stop_limit", D(93), D("92.5"))
    reason = last_event(store, "sl")
    assert "stop_price 95 -> 93" in reason and "limit_price 94.5 -> 92.5" in reason


@pytest.mark.parametrize(
    ("terms", "new_terms", "stub_field", "inside", "hit"),
    [({"trail_percent": D("2.5")}, {"trail_percent": D("1.5")}, "trail_percent", "98.6", "98.4"),  # new stop 98.5
     ({"trail_amount": D(2)}, {"trail_amount": D(1)}, "trail_price", "99.2", "98.9")],  # new stop 99
    ids=["percent", "amount"],
)
def test_alpaca_trail_is_replaced_in_its_kind(store, risk_engine, alpaca, terms, new_terms, stub_field, inside,
                                              hit) -> None:
    stub, broker = alpaca
    place(store, broker, risk_engine, trailing("t", "main", "AAPL", **terms))
    res = modify(store, broker, risk_engine, "t", "AAPL", **new_terms)
    assert res.action == "modified"
    [new_value] = new_terms.values()
    assert [b for _, b in patches(stub)] == [{"trail": float(new_value)}]
    new = live(stub, "t")
    assert getattr(new, stub_field) == new_value
    assert f"{next(iter(new_terms))} {next(iter(terms.values()))} -> {new_value}" in last_event(store, "t")
    stub.set_price("AAPL", inside)  # below the high-water mark of 100, inside the new trail
    assert stub.advance() == 0
    stub.set_price("AAPL", hit)  # the new trail's stop (the old one was further away)
    assert stub.advance() == 1


def test_alpaca_switching_trail_kind_is_refused_and_nothing_is_sent(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    place(store, broker, risk_engine, trailing("t", "main", "AAPL", trail_percent=D("2.5")))
    before = stored(store, "t")
    with pytest.raises(ModifyNotSupported, match=r"trail_percent.*switching to trail_amount is not possible"):
        modify(store, broker, risk_engine, "t", "AAPL", trail_amount=D(1))
    assert patches(stub) == [] and stored(store, "t") == before
    assert live(stub, "t").trail_percent == D("2.5")


def test_alpaca_bracket_stop_loss_leg_is_replaced_by_its_leg_id(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    submit_bracket(OrderRequest("b1", "main", "AAPL", Side.BUY, D(10), OrderType.MARKET, None, TimeInForce.DAY),
                   take_profit_price=D(110), stop_loss_price=D(90), broker=broker, store=store,
                   risk_engine=risk_engine, prices={"AAPL": D(100)})
    old_leg = stub.leg("b1", "stop_loss")
    res = modify(store, broker, risk_engine, "b1-sl", "AAPL", stop_price=D(88))
    assert res.action == "modified" and res.order.stop_price == D(88)
    assert patches(stub) == [(old_leg.id, {"stop_price": 88.0})]
    assert "stop_price 90 -> 88" in last_event(store, "b1-sl")
    new_leg = stub.leg("b1", "stop_loss")
    assert (new_leg.stop_price, new_leg.replaces, new_leg.status) == (D(88), old_leg.id, "held")
    got = broker.order_status("b1-sl")
    assert got is not None and (got.client_order_id, got.broker_order_id) == ("b1-sl", new_leg.id)
    assert sorted(o.client_order_id for o in broker.open_orders()) == ["b1", "b1-sl", "b1-tp"]
    stub.advance()  # the entry fills at 100; its legs work now
    stub.set_price("AAPL", "89")  # would have hit the old stop
    stub.advance()
    sync_open_orders(store, broker)
    assert {o.client_order_id: o.status for o in store.list_orders()} == {
        "b1": OrderStatus.FILLED, "b1-tp": OrderStatus.ACCEPTED, "b1-sl": OrderStatus.ACCEPTED}
    stub.set_price("AAPL", "87.5")
    stub.advance()
    sync_open_orders(store, broker)
    assert {o.client_order_id: o.status for o in store.list_orders()} == {
        "b1": OrderStatus.FILLED, "b1-tp": OrderStatus.CANCELLED, "b1-sl": OrderStatus.FILLED}


def test_alpaca_refused_replace_leaves_the_order_unchanged(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    place(store, broker, risk_engine, stop("s", "main", "AAPL", "95"))
    before = stored(store, "s")
    stub.pass_next(1)  # the lookup by client order id goes through; the PATCH is refused
    stub.fail_next(status=403, message="order is not replaceable right now")
    with pytest.raises(BrokerError, match="not replaceable right now") as err:
        modify(store, broker, risk_engine, "s", "AAPL", stop_price=D(93))
    assert not err.value.retryable
    assert stored(store, "s") == before
    assert len(stub.orders) == 1 and stub.order("s").stop_price == D(95)


# ---- Interactive Brokers -----------------------------------------------------------------------


@pytest.fixture
def tws() -> Iterator[FakeTWS]:
    with fake_tws(prices={"AAA": 100.0}) as server:
        yield server
        assert server.unhandled == []


@pytest.fixture
def ib(tws: FakeTWS) -> Iterator[IBBroker]:
    b = IBBroker(tws.host, tws.port, client_id=9, timeout=5, ack_timeout=2, shared=False)
    yield b
    b.close()


def at_tws(tws: FakeTWS, coid: str) -> FakeOrder:
    [order] = [o for o in tws.snapshot() if o.order_ref == coid]
    return order


def test_ib_stop_price_is_the_new_aux_price_and_triggers_there(store, risk_engine, tws, ib) -> None:
    place(store, ib, risk_engine, stop("s", ACCOUNT, "AAA", "95"))
    res = modify(store, ib, risk_engine, "s", "AAA", stop_price=D(93))
    assert res.action == "modified" and res.order.stop_price == D(93)
    assert "stop_price 95 -> 93" in last_event(store, "s")
    order = at_tws(tws, "s")
    assert (order.order_type, order.aux_price, order.status) == ("STP", 93.0, "Submitted")
    assert len(tws.snapshot()) == 1  # modified in place, same order id
    tws.advance({"AAA": 94})  # under the old stop, above the new one
    assert at_tws(tws, "s").status == "Submitted"
    tws.advance({"AAA": 92.5})
    sync_open_orders(store, ib)
    assert store.get_order("s").status == OrderStatus.FILLED  # type: ignore[union-attr]


def test_ib_stop_limit_gets_both_prices(store, risk_engine, tws, ib) -> None:
    place(store, ib, risk_engine, stop("sl", ACCOUNT, "AAA", "95", limit="94.5"))
    assert modify(store, ib, risk_engine, "sl", "AAA", stop_price=D(93), limit_price=D("92.5")).action == "modified"
    order = at_tws(tws, "sl")
    assert (order.order_type, order.aux_price, order.limit_price) == ("STP LMT", 93.0, 92.5)
    reason = last_event(store, "sl")
    assert "stop_price 95 -> 93" in reason and "limit_price 94.5 -> 92.5" in reason


@pytest.mark.parametrize(
    ("terms", "new_terms", "wire"),
    [({"trail_percent": D("2.5")}, {"trail_percent": D("1.5")}, (None, 1.5)),
     ({"trail_amount": D(2)}, {"trail_amount": D(1)}, (1.0, None))],
    ids=["percent", "amount"],
)
def test_ib_trail_is_modified_in_its_kind(store, risk_engine, tws, ib, terms, new_terms, wire) -> None:
    place(store, ib, risk_engine, trailing("t", ACCOUNT, "AAA", **terms))
    assert modify(store, ib, risk_engine, "t", "AAA", **new_terms).action == "modified"
    order = at_tws(tws, "t")
    assert (order.order_type, order.aux_price, order.trailing_percent) == ("TRAIL", *wire)
    [new_value] = new_terms.values()
    assert f"{next(iter(new_terms))} {next(iter(terms.values()))} -> {new_value}" in last_event(store, "t")


def test_ib_switching_trail_kind_is_refused_and_nothing_is_sent(store, risk_engine, tws, ib) -> None:
    place(store, ib, risk_engine, trailing("t", ACCOUNT, "AAA", trail_amount=D(2)))
    before = stored(store, "t")
    with pytest.raises(ModifyNotSupported, match=r"trail_amount.*switching to trail_percent is not supported"):
        modify(store, ib, risk_engine, "t", "AAA", trail_percent=D(1))
    assert stored(store, "t") == before
    order = at_tws(tws, "t")
    assert (order.aux_price, order.trailing_percent) == (2.0, None)


def test_ib_bracket_stop_loss_child_is_modified_by_its_id(store, risk_engine, tws, ib) -> None:
    submit_bracket(OrderRequest("b1", ACCOUNT, "AAA", Side.BUY, D(10), OrderType.LIMIT, D(95), TimeInForce.DAY),
                   take_profit_price=D(110), stop_loss_price=D(90), broker=ib, store=store,
                   risk_engine=risk_engine, prices={"AAA": D(100)})
    res = modify(store, ib, risk_engine, "b1-sl", "AAA", stop_price=D(88))
    assert res.action == "modified" and "stop_price 90 -> 88" in last_event(store, "b1-sl")
    sl = at_tws(tws, "b1-sl")
    assert (sl.aux_price, sl.status, sl.oca_group) == (88.0, "PreSubmitted", "b1-oco")  # still held, still OCA
    tws.advance({"AAA": 94})  # the entry fills
    tws.advance({"AAA": 89})  # would have hit the old stop
    sync_open_orders(store, ib)
    assert {o.client_order_id: o.status for o in store.list_orders()} == {
        "b1": OrderStatus.FILLED, "b1-tp": OrderStatus.ACCEPTED, "b1-sl": OrderStatus.ACCEPTED}
    tws.advance({"AAA": 87.5})
    sync_open_orders(store, ib)
    assert {o.client_order_id: o.status for o in store.list_orders()} == {
        "b1": OrderStatus.FILLED, "b1-tp": OrderStatus.CANCELLED, "b1-sl": OrderStatus.FILLED}


def test_ib_refused_modify_leaves_the_order_unchanged(store, risk_engine, tws, ib) -> None:
    place(store, ib, risk_engine, stop("s", ACCOUNT, "AAA", "95"))
    before = stored(store, "s")
    tws.reject_next_modify("Order price is outside the price band")
    with pytest.raises(BrokerError, match="IB refused to modify 's'.*price band"):
        modify(store, ib, risk_engine, "s", "AAA", stop_price=D(93))
    assert stored(store, "s") == before
    assert (at_tws(tws, "s").aux_price, at_tws(tws, "s").status) == (95.0, "Submitted")
    got = ib.order_status("s")  # the adapter's view is the order as TWS keeps it
    assert got is not None and got.status == OrderStatus.ACCEPTED and got.reason is None
    assert modify(store, ib, risk_engine, "s", "AAA", stop_price=D(93)).action == "modified"
    assert at_tws(tws, "s").aux_price == 93.0
    sync_open_orders(store, ib)
    assert store.get_order("s").status == OrderStatus.ACCEPTED  # type: ignore[union-attr]
