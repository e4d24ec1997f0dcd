"""Interactive Brokers (TWS / IB Gateway) behind the :class:`Broker` protocol, via ib_async.

Threading: every IB call goes through :class:`~trading_pipeline.marketdata.sources.ib_session.IBSession`
(a private event loop in a daemon thread, shared with the IB bar source), so the public
methods are plain synchronous calls, safe from any thread. They block the caller until TWS
answers, so call them from FastAPI ``def`` routes (thread pool), not from ``async def`` ones.

Idempotency: our ``client_order_id`` travels in IB's ``orderRef``. Before placing, ``submit``
looks for an order with that ref in the session and in TWS's open and completed orders, and
returns it instead of placing again, so a retry after a dropped connection never doubles
an order.

Brackets are native (:meth:`IBBroker.submit_bracket`, IB's bracket pattern): the entry and
its two exits (a take-profit LMT and a stop-loss STP, GTC, ``parentId`` = the entry's order id,
one ``ocaGroup`` with ``ocaType`` 1) are placed with ``transmit`` False on the entry and the
first exit and True on the last, so TWS sends the three together; each carries our id in
``orderRef``. TWS holds the exits until the entry fills, cancels them with the entry, and
cancels the other exit when one fills.

One TWS client id allows one connection: give each process its own ``client_id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

from ib_async import IB, LimitOrder, MarketOrder, Stock, StopLimitOrder, StopOrder, Trade
from ib_async import Order as IBOrder
from ib_async.order import OrderStatus as IBStatus
from ib_async.util import UNSET_DOUBLE

from trading_pipeline import logs
from trading_pipeline.marketdata.bars import naive_utc
from trading_pipeline.marketdata.sources.ib_session import IBSession, IBUnavailable
from trading_pipeline.trading.brokers.base import (
    BrokerAccount,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    ModifyNotSupported,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side, to_decimal

log = logs.get_logger(__name__)
T = TypeVar("T")

# IB error codes that are answers to our own cancel, not rejections.
_CANCEL_CODES = frozenset({202, 10148})
_STATUS = {
    IBStatus.PendingSubmit: OrderStatus.NEW,
    IBStatus.ApiPending: OrderStatus.NEW,
    IBStatus.PreSubmitted: OrderStatus.ACCEPTED,
    IBStatus.Submitted: OrderStatus.ACCEPTED,
    IBStatus.ApiUpdate: OrderStatus.ACCEPTED,
    IBStatus.PendingCancel: OrderStatus.ACCEPTED,
    IBStatus.ValidationError: OrderStatus.ACCEPTED,
    IBStatus.Filled: OrderStatus.FILLED,
    IBStatus.Cancelled: OrderStatus.CANCELLED,
    IBStatus.ApiCancelled: OrderStatus.CANCELLED,
    IBStatus.Inactive: OrderStatus.REJECTED,
}


def _dec(x: float) -> Decimal:
    d = to_decimal(x)
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def _rejection(trade: Trade) -> str | None:
    """IB's message if the order was refused (as opposed to cancelled by us)."""
    for entry in reversed(trade.log):
        if entry.errorCode and entry.errorCode not in _CANCEL_CODES:
            return entry.message
    return None


def to_broker_order(trade: Trade) -> BrokerOrder:
    """Our view of an ib_async ``Trade``."""
    o, st = trade.order, trade.orderStatus
    fills = tuple(
        BrokerFill(
            fill_id=f.execution.execId,
            client_order_id=o.orderRef or f.execution.orderRef,
            quantity=_dec(f.execution.shares),
            price=_dec(f.execution.price),
            commission=_dec(f.commissionReport.commission),
            ts=naive_utc(f.execution.time),
        )
        for f in trade.fills
    )
    fill_qty = sum((f.quantity for f in fills), Decimal(0))
    filled = max(fill_qty, _dec(st.filled))
    if o.filledQuantity not in (None, UNSET_DOUBLE):
        filled = max(filled, _dec(float(o.filledQuantity)))
    status = _STATUS.get(st.status, OrderStatus.ACCEPTED)
    reason = None
    if status == OrderStatus.CANCELLED and (reason := _rejection(trade)) is not None:
        # refused by IB; after fills it is a server-side cancel of the rest, with IB's reason
        status = OrderStatus.REJECTED if filled == 0 else OrderStatus.CANCELLED
    elif status == OrderStatus.REJECTED:
        reason = _rejection(trade) or f"IB order status {st.status}"
    elif status == OrderStatus.ACCEPTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    if fills and fill_qty:
        avg: Decimal | None = sum((f.quantity * f.price for f in fills), Decimal(0)) / fill_qty
    else:
        avg = _dec(st.avgFillPrice) if st.avgFillPrice else None
    return BrokerOrder(
        client_order_id=o.orderRef or f"ib-{o.permId or o.orderId}",
        broker_order_id=str(o.permId or f"{o.clientId}:{o.orderId}"),
        symbol=trade.contract.symbol,
        side=Side.BUY if o.action == "BUY" else Side.SELL,
        quantity=_dec(o.totalQuantity),
        filled_quantity=filled,
        status=status,
        avg_fill_price=avg,
        reason=reason,
        fills=fills,
    )


def _ib_order(order: OrderRequest, action: str, qty: float) -> Any:
    """Our order as IB's: MKT, LMT, STP (auxPrice = stop), STP LMT (lmtPrice, auxPrice = stop),
    TRAIL (trailingPercent, or auxPrice = the trailing amount)."""
    t = OrderType(order.order_type)
    if t == OrderType.LIMIT:
        return LimitOrder(action, qty, float(order.limit_price))  # type: ignore[arg-type]
    if t == OrderType.STOP:
        return StopOrder(action, qty, float(order.stop_price))  # type: ignore[arg-type]
    if t == OrderType.STOP_LIMIT:
        return StopLimitOrder(action, qty, float(order.limit_price), float(order.stop_price))  # type: ignore[arg-type]
    if t == OrderType.TRAILING_STOP:
        if order.trail_percent is not None:
            return IBOrder(orderType="TRAIL", action=action, totalQuantity=qty, trailingPercent=float(order.trail_percent))
        return IBOrder(orderType="TRAIL", action=action, totalQuantity=qty, auxPrice=float(order.trail_amount))  # type: ignore[arg-type]
    return MarketOrder(action, qty)


class IBBroker:
    """Orders, positions and account of one IB account through TWS / IB Gateway.

    ``account`` picks one IB account when the login manages several (default: IB's default
    account; an ``OrderRequest.account`` that IB does not manage is ignored). ``shared``
    (default) reuses the process-wide connection for this client id; ``close()`` ends it.
    Rejections raise ``BrokerError(retryable=False)`` with IB's message; an unreachable or
    dropped TWS raises ``BrokerError(retryable=True)``.
    """

    name = "ib"
    supports_brackets = True  # natively: see submit_bracket

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7497,
        client_id: int = 17,
        *,
        account: str | None = None,
        timeout: float = 10.0,
        ack_timeout: float = 5.0,
        shared: bool = True,
    ) -> None:
        make = IBSession.shared if shared else IBSession
        self.session = make(host, port, client_id, timeout=timeout)
        self.account_id = account
        self.timeout = timeout
        self.ack_timeout = ack_timeout

    @classmethod
    def from_settings(cls, settings: Any) -> IBBroker:
        s = settings
        return cls(s.ib_host, s.ib_port, s.ib_client_id)

    def close(self) -> None:
        self.session.close()

    def _run(self, fn: Callable[[IB], Awaitable[T]], *, retry: bool = True) -> T:
        """Run on the session; after a dropped connection reconnect and try once more (safe:
        every operation re-reads TWS state first, and submit is idempotent by orderRef)."""
        try:
            return self.session.run(fn)
        except IBUnavailable as e:
            if not (retry and e.dropped):
                raise BrokerError(str(e), retryable=True) from e
            log.warning("ib_reconnect", reason="connection dropped, reconnecting once", error=e)
        try:
            return self.session.run(fn)
        except IBUnavailable as e:
            raise BrokerError(str(e), retryable=True) from e

    # ---- lookups (run on the session loop) -----------------------------------------------
    @staticmethod
    def _cached(ib: IB, client_order_id: str) -> Trade | None:
        found = [t for t in ib.trades() if t.order.orderRef == client_order_id]
        # prefer a live trade keyed by order id (modifiable) over a permId-only completed copy
        found.sort(key=lambda t: (t.order.orderId > 0, t.order.permId))
        return found[-1] if found else None

    async def _find(self, ib: IB, client_order_id: str) -> Trade | None:
        """The trade with our id as orderRef, as TWS knows it now.

        The open-orders round trip also works as a barrier: TWS answers after every message it
        sent before, so fills already on the wire are applied. Completed orders are fetched
        only for ids this session has not seen (other client ids, earlier connections)."""
        trade = self._cached(ib, client_order_id)
        if trade is None or not trade.isDone():
            await ib.reqAllOpenOrdersAsync()
            if trade is None:
                await ib.reqCompletedOrdersAsync(False)
            trade = self._cached(ib, client_order_id)
        return trade

    async def _wait(self, ib: IB, trade: Trade, done: Callable[[Trade], bool]) -> None:
        """Wait for TWS to answer about ``trade``; raise IBUnavailable if the socket drops."""
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        while not done(trade):
            if not ib.isConnected():
                raise IBUnavailable(
                    "connection to TWS lost while waiting for an order acknowledgement; "
                    "retry: the order will be looked up by its client order id",
                    dropped=True,
                )
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    # ---- the Broker protocol -------------------------------------------------------------
    def submit(self, order: OrderRequest) -> BrokerOrder:
        if order.quantity <= 0:
            raise BrokerError(f"quantity must be positive, got {order.quantity}")
        if problem := order.problem():
            raise BrokerError(problem)

        async def submit(ib: IB) -> BrokerOrder:
            existing = await self._find(ib, order.client_order_id)
            if existing is not None:
                return to_broker_order(existing)
            action = "BUY" if order.side == Side.BUY else "SELL"
            qty = float(order.quantity)
            ib_order = _ib_order(order, action, qty)
            ib_order.tif = order.time_in_force.value.upper()  # DAY, GTC, IOC, OPG
            ib_order.orderRef = order.client_order_id
            account = order.account if order.account in ib.managedAccounts() else self.account_id
            if account:
                ib_order.account = account
            trade = ib.placeOrder(Stock(order.symbol, "SMART", "USD"), ib_order)
            await self._wait(ib, trade, lambda t: t.orderStatus.status != IBStatus.PendingSubmit)
            return to_broker_order(trade)

        result = self._run(submit)
        if result.status == OrderStatus.REJECTED:
            log.warning("ib_order_rejected", client_order_id=order.client_order_id, reason=result.reason)
            raise BrokerError(
                f"IB rejected order {order.client_order_id}: {result.reason}", retryable=False
            )
        return result

    def submit_bracket(
        self, entry: OrderRequest, take_profit: OrderRequest, stop_loss: OrderRequest
    ) -> tuple[BrokerOrder, BrokerOrder, BrokerOrder]:
        """The entry with its take-profit and stop-loss as one IB bracket (see the module
        docstring); if TWS already has the entry's orderRef, the bracket it has is returned."""
        coid = entry.client_order_id
        exit_side = Side.SELL if entry.side == Side.BUY else Side.BUY
        problem = next((p for o in (entry, take_profit, stop_loss) if (p := o.problem())), None)
        if problem is None and entry.quantity <= 0:
            problem = f"quantity must be positive, got {entry.quantity}"
        if problem is None and (
            OrderType(take_profit.order_type) != OrderType.LIMIT
            or OrderType(stop_loss.order_type) != OrderType.STOP
        ):
            problem = "a bracket's take-profit is a limit order and its stop-loss a stop order"
        if problem is None and any(
            x.side != exit_side or x.quantity != entry.quantity or x.symbol != entry.symbol
            for x in (take_profit, stop_loss)
        ):
            problem = "a bracket's exits are on the other side, for the entry's symbol and quantity"
        if problem:
            raise BrokerError(f"bracket {coid}: {problem}")
        oca_group = take_profit.oco_group or stop_loss.oco_group or f"{coid}-oco"

        async def place(ib: IB) -> tuple[BrokerOrder, BrokerOrder, BrokerOrder]:
            found = await self._find(ib, coid)
            if found is not None:
                exits = [await self._find(ib, x.client_order_id) for x in (take_profit, stop_loss)]
                missing = [x.client_order_id for x, t in zip((take_profit, stop_loss), exits, strict=True) if t is None]
                if missing:
                    raise BrokerError(
                        f"IB has the entry {coid} but not its exits {', '.join(missing)}: not a bracket "
                        "placed here; check TWS"
                    )
                return (to_broker_order(found), *(to_broker_order(t) for t in exits if t is not None))  # type: ignore[return-value]
            account = entry.account if entry.account in ib.managedAccounts() else self.account_id
            qty = float(entry.quantity)
            parent = _ib_order(entry, "BUY" if entry.side == Side.BUY else "SELL", qty)
            parent.tif = entry.time_in_force.value.upper()
            parent.orderId = ib.client.getReqId()
            exit_action = "BUY" if exit_side == Side.BUY else "SELL"
            tp = LimitOrder(exit_action, qty, float(take_profit.limit_price))  # type: ignore[arg-type]
            sl = StopOrder(exit_action, qty, float(stop_loss.stop_price))  # type: ignore[arg-type]
            for o, req in ((tp, take_profit), (sl, stop_loss)):
                o.orderId = ib.client.getReqId()
                o.parentId = parent.orderId
                o.ocaGroup, o.ocaType = oca_group, 1
                o.tif = req.time_in_force.value.upper()
            orders = ((parent, entry), (tp, take_profit), (sl, stop_loss))
            for i, (o, req) in enumerate(orders):
                o.orderRef = req.client_order_id
                o.transmit = i == len(orders) - 1  # the last one sends the three
                if account:
                    o.account = account
            contract = Stock(entry.symbol, "SMART", "USD")
            trades = [ib.placeOrder(contract, o) for o, _ in orders]
            for trade in trades:
                await self._wait(ib, trade, lambda t: t.orderStatus.status != IBStatus.PendingSubmit)
            return tuple(to_broker_order(t) for t in trades)  # type: ignore[return-value]

        result = self._run(place)
        if result[0].status == OrderStatus.REJECTED:
            log.warning("ib_order_rejected", client_order_id=coid, reason=result[0].reason, bracket=True)
            raise BrokerError(f"IB rejected bracket {coid}: {result[0].reason}", retryable=False)
        return result

    def _existing(self, ib: IB, trade: Trade | None, client_order_id: str, verb: str) -> Trade:
        if trade is None:
            raise BrokerError(f"cannot {verb} {client_order_id!r}: no such order at IB")
        if trade.isDone():
            raise BrokerError(
                f"cannot {verb} {client_order_id!r}: order is {to_broker_order(trade).status.value}"
            )
        if trade.order.orderId <= 0 or trade.order.clientId != self.session.client_id:
            raise BrokerError(
                f"cannot {verb} {client_order_id!r}: it was placed by another TWS client "
                f"(client id {trade.order.clientId})"
            )
        return trade

    def cancel(self, client_order_id: str) -> BrokerOrder:
        async def cancel(ib: IB) -> BrokerOrder:
            trade = self._existing(
                ib, await self._find(ib, client_order_id), client_order_id, "cancel"
            )
            ib.cancelOrder(trade.order)
            await self._wait(ib, trade, lambda t: t.isDone())
            return to_broker_order(trade)

        # no automatic retry: a lost cancel ack must not come back as "already cancelled"
        return self._run(cancel, retry=False)

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_percent: Decimal | None = None,
        trail_amount: Decimal | None = None,
    ) -> BrokerOrder:
        """Place the order again with its ``orderId`` and the new terms (IB's modify):
        ``totalQuantity``; ``lmtPrice`` (LMT, STP LMT); ``auxPrice``, the stop price (STP, STP
        LMT); ``trailingPercent``, or ``auxPrice`` for a trailing amount (TRAIL). A trailing stop
        keeps its kind: percent to amount (or back) raises :class:`ModifyNotSupported` and sends
        nothing. A bracket's exit is modified under its own id (``<entry>-sl`` / ``<entry>-tp``)."""
        if trail_percent is not None and trail_amount is not None:
            raise BrokerError("modify takes one of trail_percent and trail_amount")
        if all(x is None for x in (quantity, limit_price, stop_price, trail_percent, trail_amount)):
            raise BrokerError("modify needs a quantity, limit_price, stop_price or trail")

        async def modify(ib: IB) -> BrokerOrder:
            trade = self._existing(
                ib, await self._find(ib, client_order_id), client_order_id, "modify"
            )
            o = trade.order
            kind = o.orderType
            if limit_price is not None and kind not in ("LMT", "STP LMT"):
                raise BrokerError(f"cannot set a limit price on {kind} order {client_order_id!r}")
            if stop_price is not None and kind not in ("STP", "STP LMT"):
                raise BrokerError(f"cannot set a stop price on {kind} order {client_order_id!r}")
            if trail_percent is not None or trail_amount is not None:
                if kind != "TRAIL":
                    raise BrokerError(f"cannot set a trail on {kind} order {client_order_id!r}")
                has_percent = o.trailingPercent not in (None, UNSET_DOUBLE)
                if has_percent != (trail_percent is not None):
                    have, want = ("trail_percent", "trail_amount") if has_percent else ("trail_amount", "trail_percent")
                    raise ModifyNotSupported(
                        f"cannot modify {client_order_id!r}: IB modifies a trailing stop's trail in the kind it "
                        f"has ({have}); switching to {want} is not supported, cancel and place a new order"
                    )
            terms = ("totalQuantity", "lmtPrice", "auxPrice", "trailingPercent")
            before = {k: getattr(o, k) for k in terms}
            status_before = trade.orderStatus.status
            if quantity is not None:
                o.totalQuantity = float(quantity)
            if limit_price is not None:
                o.lmtPrice = float(limit_price)
            if stop_price is not None:
                o.auxPrice = float(stop_price)
            if trail_percent is not None:
                o.trailingPercent = float(trail_percent)
            if trail_amount is not None:
                o.auxPrice = float(trail_amount)
            seen = len(trade.log)
            ib.placeOrder(trade.contract, o)  # same orderId: IB treats it as a modify
            if status_before == IBStatus.PreSubmitted:
                # TWS acknowledges no modify of a held order: its open-orders answer comes after
                # whatever it says about the modify
                await ib.reqAllOpenOrdersAsync()
            else:
                await self._wait(ib, trade, lambda t: len(t.log) > seen + 1 or t.isDone())
            refused = [e for e in trade.log[seen:] if e.errorCode and e.errorCode not in _CANCEL_CODES]
            if refused:
                # the order is live at TWS with its old terms; ib_async took the error for a
                # cancel: put the local view back as it was, keeping the message in the log
                for k, v in before.items():
                    setattr(o, k, v)
                trade.orderStatus.status = status_before
                trade.log[seen:] = [
                    replace(e, status=status_before, message=f"modify refused: {e.message}", errorCode=0)
                    if e in refused else e
                    for e in trade.log[seen:]
                ]
                raise BrokerError(f"IB refused to modify {client_order_id!r}: {refused[-1].message}")
            return to_broker_order(trade)

        return self._run(modify)

    def order_status(self, client_order_id: str) -> BrokerOrder | None:
        async def status(ib: IB) -> BrokerOrder | None:
            trade = await self._find(ib, client_order_id)
            return to_broker_order(trade) if trade is not None else None

        return self._run(status)

    def open_orders(self) -> list[BrokerOrder]:
        async def open_orders(ib: IB) -> list[BrokerOrder]:
            await ib.reqAllOpenOrdersAsync()
            return [to_broker_order(t) for t in ib.openTrades()]

        return self._run(open_orders)

    def positions(self) -> list[BrokerPosition]:
        async def positions(ib: IB) -> list[BrokerPosition]:
            rows = await ib.reqPositionsAsync()
            account = self.account_id
            return [
                BrokerPosition(
                    symbol=p.contract.symbol, quantity=_dec(p.position), avg_price=_dec(p.avgCost)
                )
                for p in rows
                if p.position and (not account or p.account == account)
            ]

        return self._run(positions)

    def account(self) -> BrokerAccount:
        tags = "NetLiquidation,TotalCashValue,BuyingPower"

        async def account(ib: IB) -> BrokerAccount:
            req_id = ib.client.getReqId()
            future = ib.wrapper.startReq(req_id)
            ib.client.reqAccountSummary(req_id, "All", tags)
            try:
                await asyncio.wait_for(future, self.timeout)
            finally:
                ib.client.cancelAccountSummary(req_id)  # TWS allows only two live summaries
            accounts = ib.managedAccounts()
            name = self.account_id or (accounts[0] if accounts else "")
            values = {
                v.tag: v.value
                for v in ib.wrapper.acctSummary.values()
                if v.account == name and v.currency in ("USD", "BASE", "")
            }
            missing = [t for t in tags.split(",") if t not in values]
            if missing:
                raise BrokerError(f"IB account {name!r} summary lacks {', '.join(missing)}")
            return BrokerAccount(
                account=name,
                cash=Decimal(values["TotalCashValue"]),
                equity=Decimal(values["NetLiquidation"]),
                buying_power=Decimal(values["BuyingPower"]),
            )

        return self._run(account)
