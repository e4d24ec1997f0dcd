"""The trading domain's parts, built from settings in one place: the bar feed, the broker, and
placing one manual order (the ops store opens with ``OpsStore.from_settings``). The CLI, the
API and the Dagster order job all use these (none builds its own); they pass the settings they
were given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from trading_pipeline.trading.brokers.base import Broker
from trading_pipeline.trading.brokers.paper import BarFeed, DuckDBBarFeed
from trading_pipeline.trading.execution import (
    ExecutionResult,
    ModifyResult,
    UnknownOrder,
    modify_order,
    submit_bracket,
    submit_order,
)
from trading_pipeline.trading.model import OrderRequest, OrderType, Side, TimeInForce
from trading_pipeline.trading.orders import Order, client_order_id, utcnow
from trading_pipeline.trading.risk import RiskEngine
from trading_pipeline.trading.store import OpsStore


def warehouse_feed(settings: Any, timeframe: str = "1d") -> DuckDBBarFeed:
    """Bars (and last closes) from the warehouse, opened read-only per call."""
    return DuckDBBarFeed(settings.warehouse_path, timeframe=timeframe)


def make_broker(settings: Any, store: OpsStore, account: str, *, feed: BarFeed | None = None,
                clock: Callable[[], datetime] | None = None) -> Broker:
    """The broker ``TRADING_BROKER`` names. Paper keeps its book in ``store`` and fills against
    ``feed`` (default: the warehouse; the API passes the serving snapshot's) on ``clock``
    (default: ``TRADING_CLOCK``; the order job passes the session's market time)."""
    if settings.broker == "paper":
        from trading_pipeline.trading.brokers.paper import PaperBroker, paper_clock

        feed = feed if feed is not None else warehouse_feed(settings)
        return PaperBroker(store, feed, account=account, clock=clock or paper_clock(settings, feed))
    if settings.broker == "alpaca":
        from trading_pipeline.trading.brokers.alpaca import AlpacaBroker

        return AlpacaBroker.from_settings(settings)
    from trading_pipeline.trading.brokers.ib import IBBroker

    return IBBroker.from_settings(settings)


@dataclass(frozen=True)
class Placed:
    result: ExecutionResult
    request: OrderRequest
    order: Order | None  # as stored after the attempt (None if nothing was recorded)
    children: tuple[Order, ...] = ()  # a bracket's exits as stored (take-profit, stop-loss)


def place_order(
    *,
    store: OpsStore,
    broker: Broker,
    feed: BarFeed,
    risk_engine: RiskEngine,
    account: str,
    symbol: str,
    side: str | Side,
    quantity: Decimal,
    limit_price: Decimal | None = None,
    time_in_force: str | TimeInForce = TimeInForce.DAY,
    order_id: str | None = None,
    order_type: str | OrderType | None = None,
    stop_price: Decimal | None = None,
    trail_percent: Decimal | None = None,
    trail_amount: Decimal | None = None,
    take_profit_price: Decimal | None = None,
    stop_loss_price: Decimal | None = None,
) -> Placed:
    """One manual order (``trading order submit``, ``POST /orders``): priced at the feed's last
    closes of the symbol and everything the account holds or works, then risk, store, broker
    (:func:`~trading_pipeline.trading.execution.submit_order`, the road signal orders take).
    Without ``order_type``, a limit price makes a limit order. ``order_id`` makes a retry safe
    (default: a new id). Contradictory terms raise
    :class:`~trading_pipeline.trading.model.InvalidOrder` and store nothing. ``take_profit_price``
    and ``stop_loss_price`` make it a bracket (:func:`~trading_pipeline.trading.execution.submit_bracket`)."""
    symbol = symbol.upper()
    side = Side(str(side).lower())
    coid = order_id or client_order_id("manual", account, symbol, utcnow(), side)
    if order_type is None:
        order_type = OrderType.LIMIT if limit_price is not None else OrderType.MARKET
    request = OrderRequest(
        coid, account, symbol, side, quantity,
        OrderType(str(order_type).lower().replace("-", "_")), limit_price, TimeInForce(str(time_in_force).lower()),
        stop_price=stop_price, trail_percent=trail_percent, trail_amount=trail_amount,
    )
    prices = feed.last_closes(sorted({symbol, *store.symbols_in_play(account)}))
    if take_profit_price is not None or stop_loss_price is not None:  # a bracket: both are required
        bracket = submit_bracket(request, take_profit_price=take_profit_price, stop_loss_price=stop_loss_price,
                                 broker=broker, store=store, risk_engine=risk_engine, prices=prices)
        return Placed(bracket.entry, request, store.get_order(coid), bracket.children)
    result = submit_order(request, broker=broker, store=store, risk_engine=risk_engine, prices=prices)
    return Placed(result, request, store.get_order(coid))


def modify_working_order(
    *,
    store: OpsStore,
    broker_for: Callable[[str], Broker],
    feed: BarFeed,
    risk_engine: RiskEngine,
    client_order_id: str,
    quantity: Decimal | None = None,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    trail_percent: Decimal | None = None,
    trail_amount: Decimal | None = None,
) -> ModifyResult:
    """``trading order modify``, ``PATCH /orders/{id}``: :func:`~trading_pipeline.trading.execution.modify_order`
    priced at the feed's last closes of the order's symbol and everything its account holds or
    works; ``broker_for(account)`` gives the order account's broker."""
    existing = store.get_order(client_order_id)
    if existing is None:
        raise UnknownOrder(f"no order {client_order_id!r} in the ops store")
    prices = feed.last_closes(sorted({existing.symbol, *store.symbols_in_play(existing.account)}))
    return modify_order(
        client_order_id, broker=broker_for(existing.account), store=store, risk_engine=risk_engine, prices=prices,
        quantity=quantity, limit_price=limit_price, stop_price=stop_price,
        trail_percent=trail_percent, trail_amount=trail_amount,
    )
