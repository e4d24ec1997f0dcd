"""AlpacaBroker against the local Alpaca stub: wire mapping, idempotency under faults, fills."""

# ruff: noqa: F811  (fixtures are imported from tests.stubs.alpaca_fixtures)

from __future__ import annotations

from decimal import Decimal

import pytest
from alpaca.trading.enums import OrderStatus as AlpacaStatus

from tests.stubs.alpaca_fixtures import (  # noqa: F401
    STUB_KEY,
    STUB_SECRET,
    alpaca_broker,
    alpaca_stub,
    dead_url,
)
from tests.stubs.alpaca_stub import AlpacaStub
from trading_pipeline.settings import Settings
from trading_pipeline.trading.brokers.alpaca import STATUS_MAP, AlpacaBroker
from trading_pipeline.trading.brokers.base import BrokerError
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, TimeInForce


def req(
    coid: str = "sig-1",
    *,
    side: Side = Side.BUY,
    qty: str = "10",
    limit: str | None = None,
    tif: TimeInForce = TimeInForce.DAY,
    symbol: str = "AAPL",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid,
        account="main",
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=Decimal(limit) if limit else None,
        time_in_force=tif,
    )


@pytest.fixture(autouse=True)
def _prices(alpaca_stub: AlpacaStub) -> None:
    alpaca_stub.set_price("AAPL", "100")


def test_every_alpaca_status_is_mapped() -> None:
    assert {s.value for s in AlpacaStatus} <= set(STATUS_MAP)


def test_submit_sends_our_fields_on_the_wire(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    got = alpaca_broker.submit(
        req("lim-1", side=Side.SELL, qty="2.5", limit="101.25", tif=TimeInForce.GTC)
    )
    wire = alpaca_stub.order("lim-1")
    assert (wire.symbol, wire.side, wire.type, wire.time_in_force) == (
        "AAPL",
        "sell",
        "limit",
        "gtc",
    )
    assert (wire.qty, wire.limit_price) == (Decimal("2.5"), Decimal("101.25"))
    assert got.broker_order_id == wire.id
    assert (got.quantity, got.filled_quantity, got.status) == (
        Decimal("2.5"),
        0,
        OrderStatus.ACCEPTED,
    )
    assert got.fills == ()


@pytest.mark.parametrize(
    ("request_", "wire_type", "wire_fields"),
    [
        (OrderRequest("st-1", "main", "AAPL", Side.BUY, Decimal(3), OrderType.STOP, None, TimeInForce.GTC,
                      stop_price=Decimal("105.5")),
         "stop", {"stop_price": Decimal("105.5"), "limit_price": None, "time_in_force": "gtc"}),
        (OrderRequest("sl-1", "main", "AAPL", Side.SELL, Decimal(3), OrderType.STOP_LIMIT, Decimal("94.5"), TimeInForce.DAY,
                      stop_price=Decimal(95)),
         "stop_limit", {"stop_price": Decimal(95), "limit_price": Decimal("94.5"), "time_in_force": "day"}),
        (OrderRequest("tp-1", "main", "AAPL", Side.SELL, Decimal(3), OrderType.TRAILING_STOP, None, TimeInForce.GTC,
                      trail_percent=Decimal("2.5")),
         "trailing_stop", {"trail_percent": Decimal("2.5"), "trail_price": None, "stop_price": None}),
        (OrderRequest("ta-1", "main", "AAPL", Side.SELL, Decimal(3), OrderType.TRAILING_STOP, None, TimeInForce.GTC,
                      trail_amount=Decimal("1.25")),
         "trailing_stop", {"trail_price": Decimal("1.25"), "trail_percent": None}),
        (OrderRequest("opg-1", "main", "AAPL", Side.BUY, Decimal(3), OrderType.LIMIT, Decimal(99), TimeInForce.OPG),
         "limit", {"limit_price": Decimal(99), "time_in_force": "opg"}),
    ],
    ids=["stop", "stop_limit", "trail_percent", "trail_amount", "opg"],
)
def test_submit_sends_stop_types_and_opg_on_the_wire(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker, request_: OrderRequest, wire_type: str, wire_fields: dict
) -> None:
    got = alpaca_broker.submit(request_)
    wire = alpaca_stub.order(request_.client_order_id)
    assert wire.type == wire_type
    assert {k: getattr(wire, k) for k in wire_fields} == wire_fields
    assert got.status == OrderStatus.ACCEPTED and got.broker_order_id == wire.id


def test_contradictory_stop_terms_never_reach_alpaca(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> None:
    bad = OrderRequest("bad-1", "main", "AAPL", Side.BUY, Decimal(1), OrderType.STOP, None, TimeInForce.GTC)
    with pytest.raises(BrokerError, match="needs a positive stop_price") as exc:
        alpaca_broker.submit(bad)
    assert not exc.value.retryable and alpaca_stub.orders == {}


def test_duplicate_submit_returns_the_first_order(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    first = alpaca_broker.submit(req())
    second = alpaca_broker.submit(req())
    assert second.broker_order_id == first.broker_order_id
    assert len(alpaca_stub.orders) == 1
    assert alpaca_stub.requests.count(("POST", "/v2/orders")) == 2  # Alpaca saw both submits


def test_disconnect_after_accept_then_retry_makes_one_order(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_stub.drop_after_next_submit()
    with pytest.raises(BrokerError) as err:
        alpaca_broker.submit(req("drop-1"))
    assert err.value.retryable
    assert len(alpaca_stub.orders) == 1  # Alpaca has it although we never heard back
    again = alpaca_broker.submit(req("drop-1"))
    assert len(alpaca_stub.orders) == 1
    assert again.broker_order_id == alpaca_stub.order("drop-1").id
    assert again.client_order_id == "drop-1"


def test_disconnect_before_accept_then_retry_creates_it(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_stub.drop_next()
    with pytest.raises(BrokerError) as err:
        alpaca_broker.submit(req("drop-2"))
    assert err.value.retryable and "TRADING_ALPACA_URL_OVERRIDE" in str(err.value)
    assert alpaca_stub.orders == {}
    assert alpaca_broker.submit(req("drop-2")).status == OrderStatus.ACCEPTED
    assert len(alpaca_stub.orders) == 1


def test_server_error_is_retryable(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> None:
    alpaca_stub.fail_next(status=500)
    with pytest.raises(BrokerError, match="HTTP 500") as err:
        alpaca_broker.submit(req())
    assert err.value.retryable


def test_reject_is_final_and_carries_alpacas_message(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_stub.reject_next_order()
    with pytest.raises(BrokerError, match="insufficient buying power") as err:
        alpaca_broker.submit(req("rej-1"))
    assert not err.value.retryable
    assert alpaca_broker.order_status("rej-1") is None


def test_real_buying_power_check(alpaca_broker: AlpacaBroker) -> None:
    with pytest.raises(BrokerError, match="HTTP 403: insufficient buying power") as err:
        alpaca_broker.submit(req("big", qty="5000"))  # $500k > $100k
    assert not err.value.retryable


def test_invalid_order_is_a_non_retryable_4xx(alpaca_broker: AlpacaBroker) -> None:
    with pytest.raises(BrokerError, match="HTTP 422") as err:
        alpaca_broker.submit(req("x" * 129))
    assert not err.value.retryable


def test_async_reject_maps_to_rejected(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("rej-2"))
    alpaca_stub.reject("rej-2")
    order = alpaca_broker.order_status("rej-2")
    assert order is not None and order.status == OrderStatus.REJECTED and order.reason
    assert order.status.is_terminal


def test_partial_fills_then_rest(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> None:
    alpaca_broker.submit(req("pf-1"))
    alpaca_stub.fill("pf-1", qty="4", price="100")
    part = alpaca_broker.order_status("pf-1")
    assert part is not None
    assert (part.status, part.filled_quantity, part.avg_fill_price) == (
        OrderStatus.PARTIALLY_FILLED,
        Decimal(4),
        Decimal(100),
    )
    assert [(f.quantity, f.price) for f in part.fills] == [(Decimal(4), Decimal(100))]
    assert "pf-1" in {o.client_order_id for o in alpaca_broker.open_orders()}

    alpaca_stub.fill("pf-1", price="102")
    done = alpaca_broker.order_status("pf-1")
    assert done is not None
    assert (done.status, done.filled_quantity) == (OrderStatus.FILLED, Decimal(10))
    assert done.avg_fill_price == Decimal("101.2")
    assert [(f.quantity, f.price) for f in done.fills] == [
        (Decimal(4), Decimal(100)),
        (Decimal(6), Decimal(102)),
    ]
    assert len({f.fill_id for f in done.fills}) == 2
    assert done.fills[0].fill_id == part.fills[0].fill_id  # a fill keeps its id as more arrive
    assert all(f.ts.tzinfo is None for f in done.fills)
    [pos] = alpaca_broker.positions()
    assert (pos.symbol, pos.quantity, pos.avg_price) == ("AAPL", Decimal(10), Decimal("101.2"))
    assert alpaca_broker.open_orders() == []


def test_cancel_partially_filled_keeps_the_fill(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("pf-2", limit="100"))
    alpaca_stub.fill("pf-2", qty="3")
    cancelled = alpaca_broker.cancel("pf-2")
    assert (cancelled.status, cancelled.filled_quantity) == (OrderStatus.CANCELLED, Decimal(3))
    assert sum(f.quantity for f in cancelled.fills) == 3
    with pytest.raises(BrokerError, match="cancelled"):
        alpaca_broker.cancel("pf-2")


def test_modify_keeps_our_id_across_alpacas_replace(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    first = alpaca_broker.submit(req("mod-1", limit="50", tif=TimeInForce.GTC))
    alpaca_stub.fill("mod-1", qty="4")
    modified = alpaca_broker.modify("mod-1", quantity=Decimal(12), limit_price=Decimal("51"))
    assert modified.client_order_id == "mod-1"
    assert modified.broker_order_id != first.broker_order_id  # Alpaca made a new order
    assert (modified.quantity, modified.filled_quantity) == (Decimal(12), Decimal(4))
    assert alpaca_stub.orders[first.broker_order_id].status == "replaced"
    [listed] = alpaca_broker.open_orders()
    assert (listed.client_order_id, listed.broker_order_id) == ("mod-1", modified.broker_order_id)
    # the fill on the replaced order still counts, as the real execution (not a derived one)
    assert [f.fill_id for f in listed.fills] == [alpaca_stub.activities[0]["id"]]
    assert sum(f.quantity for f in listed.fills) == 4
    alpaca_stub.fill("mod-1", price="51")
    done = alpaca_broker.order_status("mod-1")
    assert done is not None and done.status == OrderStatus.FILLED
    assert sum(f.quantity for f in done.fills) == done.filled_quantity == 12
    assert [f.fill_id for f in done.fills] == [a["id"] for a in alpaca_stub.activities]


def test_modify_retried_after_lost_reply_replaces_once(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("mod-2", limit="50", tif=TimeInForce.GTC))
    alpaca_stub.pass_next(1)  # the by-client-order-id lookup goes through ...
    alpaca_stub.drop_reply_next()  # ... the PATCH is carried out, but its reply is lost
    with pytest.raises(BrokerError) as err:
        alpaca_broker.modify("mod-2", quantity=Decimal(11))
    assert err.value.retryable
    assert len(alpaca_stub.orders) == 2  # the replace happened
    again = alpaca_broker.modify("mod-2", quantity=Decimal(11))
    assert again.quantity == 11
    assert len(alpaca_stub.orders) == 2  # and did not happen twice


def test_modify_rejects_fractional_and_finished(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("mod-3", limit="50"))
    with pytest.raises(BrokerError, match="whole-share"):
        alpaca_broker.modify("mod-3", quantity=Decimal("1.5"))
    alpaca_stub.fill("mod-3")
    with pytest.raises(BrokerError, match="filled") as err:
        alpaca_broker.modify("mod-3", limit_price=Decimal("49"))
    assert not err.value.retryable


def test_short_position_is_negative(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> None:
    alpaca_broker.submit(req("short-1", side=Side.SELL, qty="3"))
    alpaca_stub.advance()
    [pos] = alpaca_broker.positions()
    assert pos.quantity == Decimal(-3)


def test_account_snapshot_after_a_fill(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("acct-1", qty="10"))
    alpaca_stub.fill("acct-1", price="100")
    alpaca_stub.set_price("AAPL", "110")
    acct = alpaca_broker.account()
    assert acct.account == "PA0STUB0001"
    assert (acct.cash, acct.equity, acct.buying_power) == (
        Decimal(99000),
        Decimal(100100),
        Decimal(99000),
    )


def test_bad_keys_are_not_retryable_and_name_the_settings(alpaca_stub: AlpacaStub) -> None:
    broker = AlpacaBroker("wrong", "keys", url_override=alpaca_stub.url)
    with pytest.raises(BrokerError, match=r"HTTP 401.*TRADING_ALPACA_API_KEY") as err:
        broker.account()
    assert not err.value.retryable


def test_server_down_is_retryable(dead_url: str) -> None:
    broker = AlpacaBroker(STUB_KEY, STUB_SECRET, url_override=dead_url)
    with pytest.raises(BrokerError, match="cannot reach") as err:
        broker.submit(req())
    assert err.value.retryable


def test_malformed_reply_is_retryable(alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker) -> None:
    alpaca_stub.malformed_next(body='{"id": "not-a-uuid"}')
    with pytest.raises(BrokerError, match="unreadable") as err:
        alpaca_broker.account()
    assert err.value.retryable
    alpaca_stub.malformed_next(body="<html>oops</html>")
    with pytest.raises(BrokerError, match="unreadable"):
        alpaca_broker.positions()


def test_from_settings_maps_alpaca_settings(alpaca_stub: AlpacaStub) -> None:
    settings = Settings(
        alpaca_api_key=STUB_KEY, alpaca_secret_key=STUB_SECRET, alpaca_url_override=alpaca_stub.url
    )
    broker = AlpacaBroker.from_settings(settings)
    assert broker.account().cash == Decimal(100000)
    with pytest.raises(BrokerError, match="TRADING_ALPACA_API_KEY"):
        AlpacaBroker.from_settings(Settings(alpaca_api_key=None, alpaca_secret_key=None))


def test_fills_are_paged_through_activities(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("many", qty="101"))
    for _ in range(101):
        alpaca_stub.fill("many", qty="1", price="100")
    order = alpaca_broker.order_status("many")
    assert order is not None and order.status == OrderStatus.FILLED
    assert len(order.fills) == 101 and len({f.fill_id for f in order.fills}) == 101
    assert alpaca_stub.requests.count(("GET", "/v2/account/activities/FILL")) == 2  # 100 + 1


def test_fills_fall_back_to_filled_qty_when_activities_are_refused(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    alpaca_broker.submit(req("agg", qty="10"))
    alpaca_stub.fill("agg", qty="4", price="100")
    alpaca_stub.fill("agg", qty="6", price="102")
    alpaca_stub.pass_next(1)  # the order lookup ...
    alpaca_stub.fail_next(status=403, message="forbidden")  # ... then the activities call
    order = alpaca_broker.order_status("agg")
    assert order is not None
    [fill] = order.fills
    assert (fill.quantity, fill.price, fill.client_order_id) == (
        Decimal(10),
        Decimal("101.2"),
        "agg",
    )


def test_modify_of_terms_the_order_does_not_have_sends_nothing(
    alpaca_stub: AlpacaStub, alpaca_broker: AlpacaBroker
) -> None:
    """Stops and trails are replaced (tests/trading/brokers/test_live_modify_stops.py); on a
    limit order they are refused before anything is sent."""
    alpaca_broker.submit(req("mod-4", limit="50", tif=TimeInForce.GTC))
    for terms, what in (({"stop_price": Decimal("49")}, "stop price"), ({"trail_percent": Decimal(2)}, "trail"),
                        ({"trail_amount": Decimal(1)}, "trail")):
        with pytest.raises(BrokerError, match=f"a limit order has no {what}") as err:
            alpaca_broker.modify("mod-4", quantity=Decimal(11), **terms)
        assert not err.value.retryable
    assert len(alpaca_stub.orders) == 1  # no replace was sent
    assert ("PATCH", f"/v2/orders/{alpaca_stub.order('mod-4').id}") not in alpaca_stub.requests
    status = alpaca_broker.order_status("mod-4")
    assert status is not None and status.quantity == Decimal(10)
