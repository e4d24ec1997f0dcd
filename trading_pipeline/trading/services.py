"""The trading domain's parts, built from settings in one place: the bar feed, the broker, and
placing one manual order (the ops store opens with ``OpsStore.from_settings``). The CLI, the
API and the Dagster order job all use these (none builds its own); they pass the settings they
were given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from trading_pipeline.trading.accounts import Accounts
from trading_pipeline.trading.accounts import load as load_accounts
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
from trading_pipeline.trading.risk import RiskEngine, RiskLimits
from trading_pipeline.trading.store import OpsStore


def warehouse_feed(settings: Any, timeframe: str = "1d") -> DuckDBBarFeed:
    """Bars (and last closes) from the warehouse, opened read-only per call."""
    return DuckDBBarFeed(settings.warehouse_path, timeframe=timeframe)


def accounts_of(settings: Any) -> Accounts:
    """The accounts in force (``TRADING_ACCOUNTS_FILE``, or the one implicit account)."""
    return load_accounts(settings)


def make_broker(settings: Any, store: OpsStore, account: str, *, feed: BarFeed | None = None,
                clock: Callable[[], datetime] | None = None) -> Broker:
    """The broker ``account`` trades at (its entry in the accounts file, else ``TRADING_BROKER``);
    :class:`~trading_pipeline.trading.accounts.UnknownAccount` for a name the accounts file does
    not have. Paper keeps its book in ``store`` and fills against ``feed`` (default: the
    warehouse; the API passes the serving snapshot's) on ``clock`` (default: ``TRADING_CLOCK``;
    the order job passes the session's market time)."""
    acct = accounts_of(settings).get(account)
    if acct.broker == "paper":
        from trading_pipeline.trading.brokers.paper import PaperBroker, paper_clock

        feed = feed if feed is not None else warehouse_feed(settings)
        return PaperBroker(store, feed, account=account, starting_cash=acct.starting_cash,
                           clock=clock or paper_clock(settings, feed))
    if acct.broker == "alpaca":
        from trading_pipeline.trading.brokers.alpaca import AlpacaBroker

        if acct.alpaca is None:  # the implicit account: TRADING_ALPACA_* settings
            return AlpacaBroker.from_settings(settings)
        a = acct.alpaca
        key, secret = os.environ.get(a.api_key_env, ""), os.environ.get(a.secret_key_env, "")
        if not key or not secret:
            from trading_pipeline.trading.brokers.base import BrokerError

            raise BrokerError(f"account {account!r} (alpaca) needs its keys in the environment variables "
                              f"{a.api_key_env} and {a.secret_key_env} (named in {accounts_of(settings).source})")
        return AlpacaBroker(key, secret, paper=a.paper, url_override=a.url_override, account=account)
    from trading_pipeline.trading.brokers.ib import IBBroker

    if acct.ib is None:
        return IBBroker.from_settings(settings)
    return IBBroker(acct.ib.host, acct.ib.port, acct.ib.client_id)


def advances(order: Order | None, timeframe: str) -> bool:
    """Whether the order run for bar size ``timeframe`` advances ``order`` at the paper broker:
    an order of that bar size; for the daily run also a manual order (no timeframe, strategy
    ``manual``: filled on daily bars as ``trading order sync`` does). A scan order without a
    timeframe (stored before revision 0011 from an intraday bar) is no run's."""
    if order is None:
        return False
    if order.timeframe is None:
        return timeframe == "1d" and order.strategy == "manual"
    return order.timeframe == timeframe


def scoped_paper_broker(broker: Broker, store: OpsStore, timeframe: str) -> Broker:
    """The paper broker, advancing (``process_bars``) only the working orders of bar size
    ``timeframe`` (:func:`advances`), against the bars of its feed: the order job's run of that
    size, and `trading order sync` (daily bars). Other brokers fill orders themselves: returned
    as they are."""
    from trading_pipeline.trading.brokers.paper import PaperBroker

    if not isinstance(broker, PaperBroker):
        return broker

    class ScopedPaperBroker(PaperBroker):
        def __init__(self, inner: PaperBroker) -> None:  # the same book, feed, clock and costs
            self.__dict__.update(inner.__dict__)

        def open_orders(self):
            return [o for o in super().open_orders() if mine(o.client_order_id)]

    def mine(client_order_id: str) -> bool:
        return advances(store.get_order(client_order_id), timeframe)

    return ScopedPaperBroker(broker)


def risk_engine(settings: Any, store: OpsStore | None, account: str) -> RiskEngine:
    """``risk.yaml``'s limits with ``account``'s overrides from the accounts file."""
    base = RiskLimits.from_yaml(settings.risk_file)
    return RiskEngine(accounts_of(settings).get(account).limits(base), store)


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


def account_overview(settings: Any, store: OpsStore, feed: BarFeed) -> dict[str, Any]:
    """``GET /accounts`` and ``trading accounts``: every account (the accounts file's, or the
    implicit one, plus any the ops store has), its broker, scans and effective risk limits, and
    its cash, equity, positions and working orders from the ops store at the feed's last closes."""
    accts = accounts_of(settings)
    base = RiskLimits.from_yaml(settings.risk_file)
    in_store = set(store.list_accounts())
    rows = []
    for name in sorted(set(accts.names()) | in_store):
        configured = name in accts.by_name
        acct = accts.by_name.get(name) or (None if accts.configured else accts.get(name))
        row: dict[str, Any] = {
            "name": name, "configured": configured,
            "broker": acct.broker if acct else None,
            "description": acct.description if acct else "in the ops store, not in the accounts file: no new orders",
            "scans": (acct.public()["scans"] if acct else []),
            "starting_cash": acct.starting_cash if acct and acct.broker == "paper" else None,
            "risk_overrides": dict(acct.risk) if acct else {},
            "limits": acct.limits(base).model_dump(mode="json") if acct else None,
            "cash": None, "equity": None, "positions": 0, "open_orders": 0,
        }
        if acct and acct.alpaca:
            row["alpaca"] = acct.public()["alpaca"]
        if acct and acct.ib:
            row["ib"] = acct.public()["ib"]
        if name in in_store:
            pf = store.portfolio(name)
            prices = feed.last_closes(sorted({p.symbol for p in pf.open_positions()}))
            row.update(cash=pf.cash, equity=pf.equity(prices), positions=len(pf.open_positions()),
                       open_orders=store.count_open_orders(name))
        rows.append(row)
    return {"source": str(accts.source) if accts.source else None, "default": accts.default, "accounts": rows}
