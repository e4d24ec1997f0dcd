"""Native brackets (issue 14) through ``execution.submit_bracket`` with a real ops store, against
the Alpaca REST stub (one ``order_class: bracket`` POST, legs under our ``-tp`` / ``-sl`` ids)
and the fake TWS (parent + children with ``parentId``, one ``ocaGroup``, transmit on the last).
Nothing of our own code is mocked; the stubs speak the brokers' protocols."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.stubs.alpaca_fixtures import alpaca_broker, alpaca_stub  # noqa: F401
from tests.stubs.alpaca_stub import AlpacaStub
from tests.stubs.fake_tws import ACCOUNT, FakeTWS, fake_tws
from trading_pipeline.trading.brokers.alpaca import AlpacaBroker
from trading_pipeline.trading.brokers.base import BrokerError
from trading_pipeline.trading.brokers.ib import IBBroker
from trading_pipeline.trading.execution import (
    BracketResult,
    bracket_children,
    cancel_order,
    reconcile,
    submit_bracket,
    sync_open_orders,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from trading_pipeline.trading.store import OpsStore

pytestmark = pytest.mark.timeout(120)

D = Decimal
IDS = ("b1", "b1-tp", "b1-sl")


def entry(symbol: str, account: str, limit: str | None = None, tif: TimeInForce = TimeInForce.DAY) -> OrderRequest:
    return OrderRequest("b1", account, symbol, Side.BUY, D(10), OrderType.LIMIT if limit else OrderType.MARKET,
                        D(limit) if limit else None, tif)


def statuses(store: OpsStore) -> dict[str, OrderStatus]:
    return {o.client_order_id: o.status for o in store.list_orders()}


# ---- Alpaca ------------------------------------------------------------------------------------


@pytest.fixture
def alpaca(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> tuple[AlpacaStub, AlpacaBroker]:
    alpaca_stub.set_price("AAPL", "100")
    return alpaca_stub, alpaca_broker


def alpaca_bracket(store, broker, risk_engine, limit: str | None = None) -> BracketResult:
    return submit_bracket(entry("AAPL", "main", limit), take_profit_price=D(110), stop_loss_price=D(90), broker=broker,
                          store=store, risk_engine=risk_engine, prices={"AAPL": D(100)})


def bracket_posts(stub: AlpacaStub) -> list[dict]:
    return [b for m, p, b in stub.bodies if (m, p) == ("POST", "/v2/orders")]


def test_alpaca_bracket_is_one_post_and_three_stored_orders_with_alpacas_ids(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    res = alpaca_bracket(store, broker, risk_engine)
    assert res.entry.action == "submitted" and [c.client_order_id for c in res.children] == ["b1-tp", "b1-sl"]
    (body,) = bracket_posts(stub)
    assert body["client_order_id"] == "b1" and body["order_class"] == "bracket" and body["type"] == "market"
    assert body["take_profit"] == {"limit_price": 110.0} and body["stop_loss"] == {"stop_price": 90.0}
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    tp_leg, sl_leg = stub.leg("b1", "take_profit"), stub.leg("b1", "stop_loss")
    assert (tp_leg.type, tp_leg.limit_price, tp_leg.side, sl_leg.type, sl_leg.stop_price) == ("limit", D(110), "sell", "stop", D(90))
    stored = {o.client_order_id: o.broker_order_id for o in store.list_orders()}
    assert stored == {"b1": stub.order("b1").id, "b1-tp": tp_leg.id, "b1-sl": sl_leg.id}
    # the legs answer to our ids, listed and looked up; store and broker agree
    assert broker.order_status("b1-sl").broker_order_id == sl_leg.id  # type: ignore[union-attr]
    assert sorted(o.client_order_id for o in broker.open_orders()) == sorted(IDS)
    assert reconcile(store, broker, "main") == []
    # a replay sends nothing
    again = alpaca_bracket(store, broker, risk_engine)
    assert again.entry.action == "skipped" and [c.client_order_id for c in again.children] == ["b1-tp", "b1-sl"]
    assert len(bracket_posts(stub)) == 1 and len(stub.orders) == 3


def test_alpaca_take_profit_fill_cancels_the_stop_loss(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    alpaca_bracket(store, broker, risk_engine)
    stub.fill("b1")
    sync_open_orders(store, broker)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.ACCEPTED, "b1-sl": OrderStatus.ACCEPTED}
    stub.fill_leg("b1", "take_profit")
    sync_open_orders(store, broker)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.FILLED, "b1-sl": OrderStatus.CANCELLED}
    tp = store.get_order("b1-tp")
    assert tp is not None and tp.avg_fill_price == D(110)
    assert store.portfolio("main").open_positions() == [] and broker.positions() == []
    assert broker.open_orders() == []


def test_alpaca_stop_loss_triggers_on_the_market(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    alpaca_bracket(store, broker, risk_engine)
    stub.advance()  # the entry fills at 100; the legs were held until now
    stub.set_price("AAPL", "89")
    stub.advance()
    sync_open_orders(store, broker)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.CANCELLED, "b1-sl": OrderStatus.FILLED}


def test_alpaca_cancelling_the_entry_cancels_the_legs(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    alpaca_bracket(store, broker, risk_engine, limit="95")
    cancel_order("b1", broker=broker, store=store)
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.CANCELLED)
    assert {stub.order("b1").status, stub.leg("b1", "take_profit").status, stub.leg("b1", "stop_loss").status} == {"canceled"}


def test_alpaca_cancelling_a_leg_cancels_the_other(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    alpaca_bracket(store, broker, risk_engine)
    stub.fill("b1")
    sync_open_orders(store, broker)
    cancel_order("b1-tp", broker=broker, store=store)
    sync_open_orders(store, broker)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.CANCELLED, "b1-sl": OrderStatus.CANCELLED}


def test_alpaca_lost_reply_leaves_new_records_and_a_retry_does_not_duplicate(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    stub.drop_after_next_submit()  # the bracket is made at Alpaca, the reply never arrives
    res = alpaca_bracket(store, broker, risk_engine)
    assert res.entry.action == "error" and res.entry.status == OrderStatus.NEW
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.NEW)
    assert "outcome unknown" in store.order_events("b1-tp")[-1].reason
    again = alpaca_bracket(store, broker, risk_engine)
    assert again.entry.action == "resumed"
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    assert len(bracket_posts(stub)) == 1 and len(stub.orders) == 3
    assert store.get_order("b1-tp").broker_order_id == stub.leg("b1", "take_profit").id  # type: ignore[union-attr]


def test_alpaca_server_error_leaves_new_records_and_a_retry_sends_once(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    stub.reject_next_order(status=500, message="internal server error", code=50010000)  # nothing made
    res = alpaca_bracket(store, broker, risk_engine)
    assert res.entry.action == "error" and statuses(store) == dict.fromkeys(IDS, OrderStatus.NEW)
    assert stub.orders == {}
    again = alpaca_bracket(store, broker, risk_engine)
    assert again.entry.action == "submitted" and statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    assert len(stub.orders) == 3


def test_alpaca_refusal_rejects_all_three(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    stub.reject_next_order()  # 403 insufficient buying power
    res = alpaca_bracket(store, broker, risk_engine)
    assert res.entry.action == "error" and "insufficient buying power" in res.entry.reason
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.REJECTED)


def test_alpaca_reply_without_legs_is_a_clear_error_and_resumable(store, risk_engine, alpaca) -> None:
    stub, broker = alpaca
    stub.strip_legs_next_submit()
    res = alpaca_bracket(store, broker, risk_engine)
    assert res.entry.action == "error" and "reply lacks the take-profit and stop-loss legs" in res.entry.reason
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.NEW)
    assert alpaca_bracket(store, broker, risk_engine).entry.action == "resumed"
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED) and len(stub.orders) == 3


def test_alpaca_adapter_refuses_terms_alpaca_cannot_bracket(alpaca) -> None:
    stub, broker = alpaca
    ioc = entry("AAPL", "main", tif=TimeInForce.IOC)
    with pytest.raises(BrokerError, match="day or gtc") as err:
        broker.submit_bracket(ioc, *bracket_children(ioc, D(110), D(90)))
    assert err.value.retryable is False and bracket_posts(stub) == []
    stub.strip_legs_next_submit()
    e = entry("AAPL", "main")
    with pytest.raises(BrokerError, match="lacks the take-profit and stop-loss legs") as err:
        broker.submit_bracket(e, *bracket_children(e, D(110), D(90)))
    assert err.value.retryable is True
    # the bracket is there: a replayed submit returns it instead of placing another
    got = broker.submit_bracket(e, *bracket_children(e, D(110), D(90)))
    assert [o.client_order_id for o in got] == list(IDS) and len(stub.orders) == 3


def test_alpaca_a_plain_order_under_a_leg_id_is_still_found(alpaca) -> None:
    stub, broker = alpaca
    plain = OrderRequest("x-tp", "main", "AAPL", Side.BUY, D(1), OrderType.MARKET, None, TimeInForce.DAY)
    broker.submit(plain)
    assert broker.order_status("x-tp").broker_order_id == stub.order("x-tp").id  # type: ignore[union-attr]
    assert broker.order_status("nope-tp") is None


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


def ib_bracket(store, broker, risk_engine, limit: str | None = "95") -> BracketResult:
    return submit_bracket(entry("AAA", ACCOUNT, limit), take_profit_price=D(110), stop_loss_price=D(90), broker=broker,
                          store=store, risk_engine=risk_engine, prices={"AAA": D(100)})


def test_ib_bracket_reaches_tws_as_parent_and_oca_children(store, risk_engine, tws, ib) -> None:
    res = ib_bracket(store, ib, risk_engine)
    assert res.entry.action == "submitted"
    parent, tp, sl = tws.snapshot()
    assert (parent.order_ref, parent.order_type, parent.limit_price, parent.parent_id) == ("b1", "LMT", 95.0, 0)
    assert (tp.order_ref, tp.order_type, tp.limit_price, tp.action, tp.tif) == ("b1-tp", "LMT", 110.0, "SELL", "GTC")
    assert (sl.order_ref, sl.order_type, sl.aux_price, sl.action, sl.tif) == ("b1-sl", "STP", 90.0, "SELL", "GTC")
    assert tp.parent_id == sl.parent_id == parent.order_id
    assert (tp.oca_group, tp.oca_type) == (sl.oca_group, sl.oca_type) == ("b1-oco", 1)
    assert (tp.status, sl.status) == ("PreSubmitted", "PreSubmitted")  # held until the entry fills
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    stored = {o.client_order_id: o.broker_order_id for o in store.list_orders()}
    assert stored == {"b1": str(parent.perm_id), "b1-tp": str(tp.perm_id), "b1-sl": str(sl.perm_id)}
    assert sorted(o.client_order_id for o in ib.open_orders()) == sorted(IDS)
    again = ib_bracket(store, ib, risk_engine)
    assert again.entry.action == "skipped" and len(tws.snapshot()) == 3


def test_ib_take_profit_fill_cancels_the_stop_loss(store, risk_engine, tws, ib) -> None:
    ib_bracket(store, ib, risk_engine)
    tws.advance({"AAA": 111})  # above the take-profit, but the entry has not filled: nothing
    sync_open_orders(store, ib)
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    tws.advance({"AAA": 94})  # the entry fills
    sync_open_orders(store, ib)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.ACCEPTED, "b1-sl": OrderStatus.ACCEPTED}
    tws.advance({"AAA": 111})
    sync_open_orders(store, ib)
    assert statuses(store) == {"b1": OrderStatus.FILLED, "b1-tp": OrderStatus.FILLED, "b1-sl": OrderStatus.CANCELLED}
    assert store.portfolio(ACCOUNT).open_positions() == [] and ib.positions() == []


def test_ib_cancelling_the_entry_cancels_the_children(store, risk_engine, tws, ib) -> None:
    ib_bracket(store, ib, risk_engine)
    cancel_order("b1", broker=ib, store=store)
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.CANCELLED)
    assert {o.status for o in tws.snapshot()} == {"Cancelled"}


def test_ib_dropped_connection_leaves_new_records_and_a_retry_places_once(store, risk_engine, tws, ib) -> None:
    tws.drop_before_next_transmit(2)  # the first try and the adapter's reconnect-and-retry both die
    res = ib_bracket(store, ib, risk_engine)
    assert res.entry.action == "error" and statuses(store) == dict.fromkeys(IDS, OrderStatus.NEW)
    assert tws.snapshot() == []
    again = ib_bracket(store, ib, risk_engine)
    assert again.entry.action == "submitted" and statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    assert [o.order_ref for o in tws.snapshot()] == list(IDS)


def test_ib_lost_acknowledgement_is_found_not_placed_again(store, risk_engine, tws, ib) -> None:
    tws.drop_after_next_order()  # the bracket is live at TWS, the client never hears
    res = ib_bracket(store, ib, risk_engine)
    assert res.entry.status == OrderStatus.ACCEPTED and statuses(store) == dict.fromkeys(IDS, OrderStatus.ACCEPTED)
    assert [o.order_ref for o in tws.snapshot()] == list(IDS)


def test_ib_rejected_entry_rejects_the_bracket(store, risk_engine, tws, ib) -> None:
    tws.reject_next_order("Insufficient buying power")
    res = ib_bracket(store, ib, risk_engine)
    assert res.entry.action == "error" and "Insufficient buying power" in res.entry.reason
    assert statuses(store) == dict.fromkeys(IDS, OrderStatus.REJECTED)
    assert [o.status for o in tws.snapshot()] == ["Inactive", "Cancelled", "Cancelled"]
