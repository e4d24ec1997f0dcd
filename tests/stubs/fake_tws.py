"""A fake TWS / IB Gateway speaking the TWS API socket protocol, for tests of the IB adapters.

It is small on purpose: it answers only what ``ib_async`` 2.1 (and our adapters) send, and it
encodes every message for one server version (:data:`SERVER_VERSION`, the highest that
ib_async 2.1 offers). The real ``ib_async.IB`` client connects to it unchanged.

Wire protocol, as implemented here:

- handshake: the client sends ``b"API\\0"`` then a length-prefixed ``"v157..178"``; we answer
  ``"<server version>\\0<connection time>\\0"``; the client sends ``startApi`` (71) and we
  answer ``nextValidId`` (9) and ``managedAccounts`` (15);
- every message is a 4-byte big-endian length, then NUL-terminated text fields, the first
  one being the message id.

Requests handled (client -> server id): placeOrder 3, cancelOrder 4, reqOpenOrders 5,
reqAccountUpdates 6, reqExecutions 7, reqIds 8, reqAutoOpenOrders 15, reqAllOpenOrders 16,
reqManagedAccts 17, reqHistoricalData 20, cancelHistoricalData 25, reqCurrentTime 49,
reqPositions 61, reqAccountSummary 62, cancelAccountSummary 63, cancelPositions 64,
startApi 71, reqAccountUpdatesMulti 76, cancelAccountUpdatesMulti 77, reqCompletedOrders 99.
Anything else is recorded in :attr:`FakeTWS.unhandled` and ignored.

Messages sent (server -> client id): orderStatus 3, error 4, openOrder 5, updateAccountValue 6,
updateAccountTime 8, nextValidId 9, execDetails 11, managedAccounts 15, historicalData 17,
currentTime 49, openOrderEnd 53, accountDownloadEnd 54, execDetailsEnd 55,
commissionReport 59, position 61, positionEnd 62, accountSummary 63, accountSummaryEnd 64,
accountUpdateMulti 73, accountUpdateMultiEnd 74, completedOrder 101, completedOrdersEnd 102.

Market model: one price per symbol (``prices=`` or the last close in ``bars``). Market orders
fill at that price when placed; limit orders fill when the price crosses the limit (at
placement, on modify, or on :meth:`FakeTWS.advance`). Fault injection:
:meth:`~FakeTWS.reject_next_order` (error 201), :meth:`~FakeTWS.drop_connections`,
:meth:`~FakeTWS.drop_after_next_order` (the order reaches the server, no reply, socket dies),
:meth:`~FakeTWS.partial_fill_next` (fill part now, the rest on ``advance()``),
:meth:`~FakeTWS.drop_before_next_transmit` (the connection dies before a transmit goes live).

Brackets (IB's pattern): an order placed with ``transmit`` 0 is held, unseen, until an order
of the same client with ``transmit`` 1 arrives; then all of them go live together (held ones
are dropped with their connection). A child (``parentId``) is ``PreSubmitted`` and does not
fill until its parent has filled; cancelling a parent cancels its children; a fill of an order
in an ``ocaGroup`` with ``ocaType`` 1 cancels the rest of the group.

Stops (STP, STP LMT) trigger when the price reaches ``auxPrice`` (then fill as a market or limit
order); trailing stops (TRAIL) never trigger. A modify (placeOrder again with the order's id)
applies the new quantity, ``lmtPrice``, ``auxPrice`` and ``trailingPercent``;
:meth:`~FakeTWS.reject_next_modify` refuses the next one with error 201 (the order stays as it was).

The server runs on 127.0.0.1 on a free port, in a daemon thread with its own event loop, so
synchronous tests can use it; every public method is thread-safe (it runs on that loop).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import polars as pl

log = logging.getLogger("fake_tws")

SERVER_VERSION = 178
ACCOUNT = "DU1234567"
DONE = frozenset({"Filled", "Cancelled", "Inactive", "ApiCancelled"})
BAR_SIZES = {
    "1 min": "1m",
    "5 mins": "5m",
    "15 mins": "15m",
    "30 mins": "30m",
    "1 hour": "1h",
    "1 day": "1d",
}
T = TypeVar("T")


@dataclass
class FakeExecution:
    exec_id: str
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission: float
    time: datetime


@dataclass
class FakeOrder:
    """The server's record of one order (what TWS would show in its blotter)."""

    client_id: int
    order_id: int
    perm_id: int
    symbol: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    tif: str
    account: str
    order_ref: str
    aux_price: float | None = None  # STP / STP LMT: the stop price; TRAIL: the trailing amount
    trailing_percent: float | None = None
    parent_id: int = 0  # a bracket child: the parent's order id (same client)
    oca_group: str = ""
    oca_type: int = 0
    status: str = "Submitted"
    hold: float | None = None  # quantity allowed to fill before the next advance()
    executions: list[FakeExecution] = field(default_factory=list)
    reason: str = ""

    @property
    def filled(self) -> float:
        return sum(e.shares for e in self.executions)

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def avg_price(self) -> float:
        filled = self.filled
        return sum(e.shares * e.price for e in self.executions) / filled if filled else 0.0


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    version: int = SERVER_VERSION
    client_id: int | None = None
    muted: bool = False
    closed: bool = False
    account_updates: bool = False

    def send(self, *fields: Any) -> None:
        if self.muted or self.closed:
            return
        text = "".join(f"{_fmt(f)}\0" for f in fields).encode()
        self.writer.write(struct.pack(">I", len(text)) + text)

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _ib_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def _parse_end(s: str) -> datetime:
    """``endDateTime`` of reqHistoricalData as aware UTC ('' means now)."""
    s = s.strip()
    if not s:
        return datetime.now(UTC)
    if "-" in s[:9]:  # 20240105-14:30:00 (UTC)
        return datetime.strptime(s, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    parts = s.split(" ")
    t = datetime.strptime(parts[0] + parts[1], "%Y%m%d%H:%M:%S")
    tz = ZoneInfo(parts[2]) if len(parts) > 2 else UTC
    return t.replace(tzinfo=tz).astimezone(UTC)


def _parse_duration(s: str) -> timedelta:
    n, unit = s.split()
    days = {"S": 1 / 86400, "D": 1, "W": 7, "M": 31, "Y": 366}[unit]
    return timedelta(days=int(n) * days)


class FakeTWS:
    """A TWS API server good enough for ``ib_async.IB().connect()`` and our adapters."""

    def __init__(
        self,
        bars: pl.DataFrame | None = None,
        *,
        prices: dict[str, float] | None = None,
        cash: float = 1_000_000.0,
        account: str = ACCOUNT,
        known_symbols: tuple[str, ...] = (),
        commission_per_share: float = 0.005,
        min_commission: float = 1.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.account = account
        self.cash = cash
        self.commission_per_share = commission_per_share
        self.min_commission = min_commission
        self.bars = bars if bars is not None else pl.DataFrame()
        self.prices: dict[str, float] = dict(prices or {})
        self.known_symbols = set(known_symbols)
        if not self.bars.is_empty():
            self.known_symbols |= set(self.bars["symbol"].unique().to_list())
            last = self.bars.sort("ts").group_by("symbol").agg(pl.col("close").last())
            for sym, close in last.iter_rows():
                self.prices.setdefault(sym, float(close))
        self.known_symbols |= set(self.prices)
        self.orders: dict[tuple[int, int], FakeOrder] = {}
        self.positions: dict[tuple[str, str], tuple[float, float]] = {}  # qty, avg cost
        self.history_requests: list[dict[str, Any]] = []
        self.unhandled: list[list[str]] = []
        self.connections_accepted = 0
        self._conns: set[_Conn] = set()
        self._perm_ids = itertools.count(9_000_001)
        self._exec_seq = itertools.count(1)
        self._con_ids: dict[str, int] = {}
        self._reject_next: str | None = None
        self._reject_modify: str | None = None
        self._drop_after_next_order = False
        self._drop_before_transmit = 0
        self._untransmitted: dict[int, list[FakeOrder]] = {}  # client id -> orders placed with transmit 0
        self._partial_next: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeTWS:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-tws", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake TWS did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            for conn in list(self._conns):
                conn.abort()
            assert self._server is not None
            self._server.close()

        try:
            self.call(lambda: asyncio.ensure_future(shutdown()))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    def __enter__(self) -> FakeTWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the server loop (all state lives there) and return its result."""
        assert self._loop is not None, "fake TWS not started"

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    # ---- test controls -------------------------------------------------------------------
    def set_price(self, symbol: str, price: float) -> None:
        self.call(lambda: self.prices.__setitem__(symbol, float(price)))

    def reject_next_order(self, reason: str = "Insufficient buying power") -> None:
        """The next new order is rejected with error 201 (as TWS does for a refused order)."""
        self.call(lambda: setattr(self, "_reject_next", reason))

    def reject_next_modify(self, reason: str = "Order modification rejected") -> None:
        """The next modify (placeOrder again with a live order's id) is refused with error 201;
        the order stays live with the terms it had."""
        self.call(lambda: setattr(self, "_reject_modify", reason))

    def drop_after_next_order(self) -> None:
        """Accept the next order (it is live on the server) but die before replying."""
        self.call(lambda: setattr(self, "_drop_after_next_order", True))

    def drop_before_next_transmit(self, n: int = 1) -> None:
        """The next ``n`` orders placed with transmit (and the held orders they would send)
        never go live: the connection is reset instead."""
        self.call(lambda: setattr(self, "_drop_before_transmit", n))

    def partial_fill_next(self, quantity: float) -> None:
        """The next order fills only ``quantity`` now; the rest fills on :meth:`advance`."""
        self.call(lambda: setattr(self, "_partial_next", float(quantity)))

    def drop_connections(self) -> None:
        """Reset every client socket, like TWS restarting or a network failure."""

        def drop() -> None:
            for conn in list(self._conns):
                conn.abort()

        self.call(drop)

    def advance(self, prices: dict[str, float] | None = None) -> None:
        """Move the market: set new prices, then fill whatever can fill now."""

        def run() -> None:
            self.prices.update({k: float(v) for k, v in (prices or {}).items()})
            for order in list(self.orders.values()):
                if order.status not in DONE:
                    order.hold = None
                    self._try_fill(order)

        self.call(run)

    def snapshot(self) -> list[FakeOrder]:
        """Every order the server has seen (including rejected ones), in placement order."""
        return self.call(lambda: sorted(self.orders.values(), key=lambda o: o.perm_id))

    def live_orders(self, order_ref: str | None = None) -> list[FakeOrder]:
        return [
            o
            for o in self.snapshot()
            if o.status != "Inactive" and (order_ref is None or o.order_ref == order_ref)
        ]

    # ---- connection handling -------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        self.connections_accepted += 1
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            hello = (await self._read(reader)).decode()
            m = re.match(r"v(\d+)(?:\.\.(\d+))?", hello)
            if not m or not int(m[1]) <= SERVER_VERSION <= int(m[2] or m[1]):
                log.warning("client version range %r does not include %s", hello, SERVER_VERSION)
                return
            text = f"{SERVER_VERSION}\0{_ib_time(datetime.now(UTC))}\0".encode()
            writer.write(struct.pack(">I", len(text)) + text)
            while not conn.closed:
                fields = (await self._read(reader)).decode().split("\0")[:-1]
                try:
                    self._dispatch(conn, fields)
                except Exception:  # a bug here must not kill the connection silently
                    log.exception("fake TWS failed on %s", fields)
                    raise
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            conn.closed = True
            self._conns.discard(conn)
            if conn.client_id is not None:
                self._untransmitted.pop(conn.client_id, None)  # held orders die with the session
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        return await reader.readexactly(size)

    def _owner(self, client_id: int) -> _Conn | None:
        for conn in self._conns:
            if conn.client_id == client_id and not conn.closed:
                return conn
        return None

    def _dispatch(self, conn: _Conn, f: list[str]) -> None:
        msg = int(f[0])
        if msg == 71:  # startApi: version, clientId, optCapab
            client_id = int(f[2])
            if self._owner(client_id) is not None:
                conn.send(
                    4,
                    2,
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. "
                    "Retry with a unique client id.",
                    "",
                )
                conn.abort()
                return
            conn.client_id = client_id
            conn.send(15, 1, self.account)
            conn.send(9, 1, self._next_order_id(client_id))
        elif msg == 8:  # reqIds
            conn.send(9, 1, self._next_order_id(conn.client_id or 0))
        elif msg == 17:  # reqManagedAccts
            conn.send(15, 1, self.account)
        elif msg == 49:  # reqCurrentTime
            conn.send(49, 1, int(datetime.now(UTC).timestamp()))
        elif msg == 61:  # reqPositions
            for (account, symbol), (qty, cost) in sorted(self.positions.items()):
                if qty:
                    conn.send(61, 3, account, *self._contract_fields(symbol), qty, cost)
            conn.send(62, 1)
        elif msg in (5, 16):  # reqOpenOrders (this client) / reqAllOpenOrders
            for o in self._sorted_orders():
                if o.status not in DONE and (msg == 16 or o.client_id == conn.client_id):
                    conn.send(*self._open_order(o, conn.version))
                    conn.send(*self._order_status(o))
            conn.send(53, 1)
        elif msg == 99:  # reqCompletedOrders
            for o in self._sorted_orders():
                if o.status in DONE:
                    conn.send(*self._completed_order(o, conn.version))
            conn.send(102)
        elif msg == 7:  # reqExecutions: reqId, then the filter
            req_id = int(f[2])
            for o in self._sorted_orders():
                if o.client_id == conn.client_id:
                    for ex in o.executions:
                        conn.send(*self._exec_details(o, ex, req_id, conn.version))
                        conn.send(*self._commission(ex))
            conn.send(55, 1, req_id)
        elif msg == 6:  # reqAccountUpdates: version, subscribe, account
            conn.account_updates = f[2] == "1"
            if conn.account_updates:
                self._send_account_values(conn)
                conn.send(8, 1, datetime.now(UTC).strftime("%H:%M"))
                conn.send(54, 1, self.account)
        elif msg == 76:  # reqAccountUpdatesMulti: version, reqId, account, modelCode, ledger
            req_id = int(f[2])
            for tag, value in self._account_values().items():
                conn.send(73, 1, req_id, self.account, f[4], tag, value, "USD")
            conn.send(74, 1, req_id)
        elif msg == 62:  # reqAccountSummary: version, reqId, group, tags
            req_id = int(f[2])
            wanted = set(f[4].split(","))
            for tag, value in self._account_values().items():
                if tag in wanted:
                    conn.send(63, 1, req_id, self.account, tag, value, "USD")
            conn.send(64, 1, req_id)
        elif msg == 20:
            self._historical_data(conn, f)
        elif msg == 3:
            self._place_order(conn, f)
        elif msg == 4:
            self._cancel_order(conn, int(f[2]))
        elif msg in (15, 25, 63, 64, 77):  # autoOpenOrders / cancellations: nothing to answer
            pass
        else:
            self.unhandled.append(f)

    # ---- market data -------------------------------------------------------------------
    def _historical_data(self, conn: _Conn, f: list[str]) -> None:
        # 20, reqId, contract(12), includeExpired, end, barSize, duration, useRTH, whatToShow, formatDate
        req_id, symbol = int(f[1]), f[3]
        end, bar_size, duration, format_date = f[15], f[16], f[17], int(f[20])
        self.history_requests.append(
            {
                "symbol": symbol,
                "end": end,
                "bar_size": bar_size,
                "duration": duration,
                "use_rth": f[18] == "1",
                "what": f[19],
                "format_date": format_date,
            }
        )
        if symbol not in self.known_symbols:
            conn.send(
                4, 2, req_id, 200, "No security definition has been found for the request", ""
            )
            return
        timeframe = BAR_SIZES.get(bar_size)
        if timeframe is None:
            conn.send(
                4,
                2,
                req_id,
                321,
                f"Error validating request.-'bB' : cause - Invalid bar size '{bar_size}'",
                "",
            )
            return
        end_dt = _parse_end(end).replace(tzinfo=None)
        start_dt = end_dt - _parse_duration(duration)
        rows = (
            self.bars.filter(pl.col("symbol") == symbol) if not self.bars.is_empty() else self.bars
        )
        if "timeframe" in rows.columns:
            rows = rows.filter(pl.col("timeframe") == timeframe)
        if not rows.is_empty():
            rows = rows.filter((pl.col("ts") >= start_dt) & (pl.col("ts") < end_dt)).sort("ts")
        if rows.is_empty():
            conn.send(
                4,
                2,
                req_id,
                162,
                "Historical Market Data Service error message:HMDS query "
                f"returned no data: {symbol}@SMART Trades",
                "",
            )
            return
        out: list[Any] = []
        for r in rows.iter_rows(named=True):
            ts: datetime = r["ts"]
            if timeframe == "1d":
                stamp = ts.strftime("%Y%m%d")
            elif format_date == 2:
                stamp = str(int(ts.replace(tzinfo=UTC).timestamp()))
            else:
                stamp = ts.strftime("%Y%m%d %H:%M:%S") + " UTC"
            wap = (r["high"] + r["low"] + r["close"]) / 3
            out += [stamp, r["open"], r["high"], r["low"], r["close"], r["volume"], wap, 1]
        fmt = "%Y%m%d %H:%M:%S"
        conn.send(17, req_id, start_dt.strftime(fmt), end_dt.strftime(fmt), rows.height, *out)

    # ---- orders ------------------------------------------------------------------------
    def _next_order_id(self, client_id: int) -> int:
        used = [oid for (cid, oid) in self.orders if cid == client_id]
        return max(used, default=0) + 1

    def _sorted_orders(self) -> list[FakeOrder]:
        return sorted(self.orders.values(), key=lambda o: o.perm_id)

    def _place_order(self, conn: _Conn, f: list[str]) -> None:
        # 3, orderId, contract(12), secIdType, secId, action, totalQuantity, orderType, lmtPrice,
        # auxPrice, tif, ocaGroup, account, openClose, origin, orderRef, ...
        client_id = conn.client_id or 0
        order_id = int(f[1])
        existing = self.orders.get((client_id, order_id))
        if existing is not None:
            self._modify(conn, existing, f)
            return
        order = FakeOrder(
            client_id=client_id,
            order_id=order_id,
            perm_id=next(self._perm_ids),
            symbol=f[3],
            action=f[16],
            quantity=float(f[17]),
            order_type=f[18],
            limit_price=float(f[19]) if f[19] else None,
            tif=f[21] or "DAY",
            account=f[23] or self.account,
            order_ref=f[26],
            aux_price=float(f[20]) if f[20] else None,
            trailing_percent=self._trailing_percent(f, conn.version),
            parent_id=int(f[28] or 0),
            oca_group=f[22],
            oca_type=self._oca_type(f, conn.version),
        )
        if f[27] == "0":  # transmit off: TWS holds it until an order with transmit on
            self._untransmitted.setdefault(client_id, []).append(order)
            return
        group = [*self._untransmitted.pop(client_id, []), order]
        if self._drop_before_transmit:
            self._drop_before_transmit -= 1
            conn.abort()  # nothing of the group went live
            return
        for o in group:
            self.orders[(client_id, o.order_id)] = o
        if self._drop_after_next_order:
            self._drop_after_next_order = False
            conn.muted = True  # the orders are live, but the client never hears about them
        for o in group:
            self._activate(conn, o)
        if conn.muted:
            conn.abort()

    def _activate(self, conn: _Conn, order: FakeOrder) -> None:
        parent = self.orders.get((order.client_id, order.parent_id)) if order.parent_id else None
        if parent is not None and parent.status in ("Inactive", "Cancelled", "ApiCancelled"):
            order.status = "Cancelled"  # a child of a refused parent goes with it
            conn.send(*self._order_status(order))
            conn.send(4, 2, order.order_id, 202, "Order Canceled - reason:parent order not active", "")
        elif self._reject_next is not None:
            order.status, order.reason = "Inactive", self._reject_next
            self._reject_next = None
            conn.send(4, 2, order.order_id, 201, f"Order rejected - reason:{order.reason}", "")
        elif order.symbol not in self.known_symbols:
            order.status, order.reason = "Inactive", "No security definition has been found"
            conn.send(
                4, 2, order.order_id, 200, "No security definition has been found for the request", ""
            )
        else:
            order.status = "PreSubmitted" if parent is not None and parent.status != "Filled" else "Submitted"
            conn.send(*self._open_order(order, conn.version))
            conn.send(*self._order_status(order))
            if self._partial_next is not None:
                order.hold, self._partial_next = self._partial_next, None
            self._try_fill(order)

    @staticmethod
    def _oca_type(f: list[str], version: int) -> int:
        """placeOrder's ocaType: after modelCode, shortSaleSlot, designatedLocation, exemptCode."""
        value = f[42 + (1 if version < 177 else 0) + 4]
        return int(value) if value else 0

    @staticmethod
    def _trailing_percent(f: list[str], version: int) -> float | None:
        """placeOrder's trailingPercent: after hidden (f[34]), an empty field, discretionaryAmt,
        goodAfterTime, goodTillDate, faGroup, faMethod, faPercentage, faProfile (before server
        version 177), 24 fields from modelCode to deltaNeutralAuxPrice (8 more when
        deltaNeutralOrderType is set), continuousUpdate, referencePriceType, trailStopPrice."""
        i = 42 + (1 if version < 177 else 0)
        i += 24 + (8 if f[i + 22] else 0)
        value = f[i + 3]
        return float(value) if value else None

    def _modify(self, conn: _Conn, order: FakeOrder, f: list[str]) -> None:
        if order.status in DONE:
            conn.send(4, 2, order.order_id, 104, "Cannot modify a filled order.", "")
            return
        if self._reject_modify is not None:
            reason, self._reject_modify = self._reject_modify, None
            conn.send(4, 2, order.order_id, 201, f"Order rejected - reason:{reason}", "")
            return
        order.quantity = float(f[17])
        order.limit_price = float(f[19]) if f[19] else None
        order.aux_price = float(f[20]) if f[20] else None
        order.trailing_percent = self._trailing_percent(f, conn.version)
        conn.send(*self._open_order(order, conn.version))
        conn.send(*self._order_status(order))
        self._try_fill(order)

    def _cancel_order(self, conn: _Conn, order_id: int) -> None:
        order = self.orders.get((conn.client_id or 0, order_id))
        if order is None:
            conn.send(4, 2, order_id, 135, f"Can't find order with id ={order_id}", "")
        elif order.status in DONE:
            conn.send(
                4,
                2,
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled "
                f"cannot be cancelled, state: {order.status}.",
                "",
            )
        else:
            order.status = "Cancelled"
            conn.send(*self._order_status(order))
            conn.send(4, 2, order_id, 202, "Order Canceled - reason:", "")
            for child in self._children(order):  # a bracket's exits go with their parent
                if child.status not in DONE:
                    child.status = "Cancelled"
                    conn.send(*self._order_status(child))
                    conn.send(4, 2, child.order_id, 202, "Order Canceled - reason:parent cancelled", "")

    def _children(self, parent: FakeOrder) -> list[FakeOrder]:
        return [o for o in self._sorted_orders()
                if o.parent_id and o.parent_id == parent.order_id and o.client_id == parent.client_id]

    def _try_fill(self, order: FakeOrder) -> None:
        price = self.prices.get(order.symbol)
        if price is None or order.status == "PreSubmitted":  # a child waits for its parent
            return
        buy = order.action == "BUY"
        kind = order.order_type
        if kind in ("STP", "STP LMT"):  # a stop acts once the price reaches its stop (auxPrice)
            stop = order.aux_price
            if stop is None or (price < stop if buy else price > stop):
                return
            kind = "MKT" if kind == "STP" else "LMT"
        marketable = kind == "MKT" or (  # trailing stops (TRAIL) rest here
            kind == "LMT"
            and order.limit_price is not None
            and (price <= order.limit_price if buy else price >= order.limit_price)
        )
        qty = order.remaining
        if order.hold is not None:
            qty = min(qty, order.hold)
            order.hold = 0.0
        if marketable and qty > 0:
            self._fill(order, qty, price)
        if order.status not in DONE and order.tif == "IOC" and order.hold is None:
            order.status = "Cancelled"
            self._notify(order, self._order_status(order))

    def _fill(self, order: FakeOrder, qty: float, price: float) -> None:
        commission = max(self.min_commission, self.commission_per_share * qty)
        execs = order.executions
        cum = order.filled + qty
        avg = (order.filled * order.avg_price + qty * price) / cum
        ex = FakeExecution(
            exec_id=f"0000{order.perm_id:x}.{next(self._exec_seq):04d}.01.01",
            shares=qty,
            price=price,
            cum_qty=cum,
            avg_price=avg,
            commission=commission,
            time=datetime.now(UTC),
        )
        execs.append(ex)
        if order.remaining <= 1e-9:
            order.status = "Filled"
        signed = qty if order.action == "BUY" else -qty
        key = (order.account, order.symbol)
        pos, cost = self.positions.get(key, (0.0, 0.0))
        new = pos + signed
        if new == 0:
            cost = 0.0
        elif pos == 0 or (pos > 0) != (new > 0):
            cost = price
        elif abs(new) > abs(pos):
            cost = (abs(pos) * cost + qty * price) / abs(new)
        self.positions[key] = (new, cost)
        self.cash -= signed * price + commission
        conn = self._owner(order.client_id)
        if conn is not None:
            conn.send(*self._exec_details(order, ex, -1, conn.version))
            conn.send(*self._open_order(order, conn.version))
            conn.send(*self._order_status(order))
            conn.send(*self._commission(ex))
        for c in self._conns:
            if c.account_updates:
                self._send_account_values(c)
        if order.oca_group and order.oca_type == 1:  # one fills: the rest of the group is cancelled
            for other in self._sorted_orders():
                if (other is not order and other.oca_group == order.oca_group
                        and other.client_id == order.client_id and other.status not in DONE):
                    other.status = "Cancelled"
                    self._notify(other, self._order_status(other))
        if order.status == "Filled":  # a parent filled: its children work now
            for child in self._children(order):
                if child.status == "PreSubmitted":
                    child.status = "Submitted"
                    version = conn.version if conn is not None else SERVER_VERSION
                    self._notify(child, self._open_order(child, version))
                    self._notify(child, self._order_status(child))
                    self._try_fill(child)

    def _notify(self, order: FakeOrder, message: list[Any]) -> None:
        conn = self._owner(order.client_id)
        if conn is not None:
            conn.send(*message)

    # ---- account -----------------------------------------------------------------------
    def _account_values(self) -> dict[str, float]:
        value = sum(
            qty * self.prices.get(sym, cost) for (_, sym), (qty, cost) in self.positions.items()
        )
        equity = self.cash + value
        return {
            "NetLiquidation": equity,
            "TotalCashValue": self.cash,
            "BuyingPower": max(self.cash, 0.0),
            "AvailableFunds": max(self.cash, 0.0),
            "GrossPositionValue": value,
        }

    def _send_account_values(self, conn: _Conn) -> None:
        for tag, value in self._account_values().items():
            conn.send(6, 2, tag, value, "USD", self.account)

    # ---- message encoders (server version 178) -----------------------------------------
    # fmt: off
    # Field order follows ib_async/decoder.py; the comments name the fields in order.
    def _contract_fields(self, symbol: str, exchange: str = "SMART") -> list[Any]:
        con_id = self._con_ids.setdefault(symbol, 265_598 + len(self._con_ids))
        # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
        # localSymbol, tradingClass
        return [con_id, symbol, "STK", "", 0.0, "", "", exchange, "USD", symbol, "NMS"]

    def _order_status(self, o: FakeOrder) -> list[Any]:
        # orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
        # clientId, whyHeld, mktCapPrice
        return [3, o.order_id, o.status, o.filled, o.remaining, o.avg_price, o.perm_id, o.parent_id,
                o.executions[-1].price if o.executions else 0.0, o.client_id, "", 0.0]

    def _commission(self, ex: FakeExecution) -> list[Any]:
        # version, execId, commission, currency, realizedPNL, yield, yieldRedemptionDate
        return [59, 1, ex.exec_id, ex.commission, "USD", "", "", ""]

    def _exec_details(self, o: FakeOrder, ex: FakeExecution, req_id: int, version: int) -> list[Any]:
        # reqId, orderId, contract, execId, time, acctNumber, exchange, side, shares, price,
        # permId, clientId, liquidation, cumQty, avgPrice, orderRef, evRule, evMultiplier,
        # modelCode, lastLiquidity
        fields = [11, req_id, o.order_id, *self._contract_fields(o.symbol, "ISLAND"), ex.exec_id,
                  _ib_time(ex.time), o.account, "ISLAND", "BOT" if o.action == "BUY" else "SLD",
                  ex.shares, ex.price, o.perm_id, o.client_id, 0, ex.cum_qty, ex.avg_price,
                  o.order_ref, "", "", "", 1]
        if version >= 178:
            fields.append(0)  # pendingPriceRevision
        return fields

    def _order_head(self, o: FakeOrder) -> list[Any]:
        # contract, action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup,
        # account, openClose, origin, orderRef
        return [*self._contract_fields(o.symbol), o.action, o.quantity, o.order_type,
                o.limit_price if o.limit_price is not None else "", o.aux_price if o.aux_price is not None else "",
                o.tif, o.oca_group, o.account,
                "", 0, o.order_ref]

    def _open_order(self, o: FakeOrder, version: int) -> list[Any]:
        f: list[Any] = [5, o.order_id, *self._order_head(o)]
        # clientId, permId, outsideRth, hidden, discretionaryAmt, goodAfterTime,
        # sharesAllocation, faGroup, faMethod, faPercentage
        f += [o.client_id, o.perm_id, 0, 0, 0, "", "", "", "", ""]
        if version < 177:
            f += [""]  # faProfile
        # modelCode .. deltaNeutralAuxPrice (29 fields; deltaNeutralOrderType empty)
        f += ["", "", "", "", "", 0, "", -1, 0, "", "", "", "", "", 0, 0, 0, 0, "", o.oca_type or 3, 0, 0,
              "", o.parent_id, 0, "", 0, "", ""]
        # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, basisPoints,
        # basisPointsType, comboLegsDescrip, #legs, #orderLegs, #smartComboParams,
        # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement, hedgeType
        trailing = o.trailing_percent if o.trailing_percent is not None else ""
        f += [0, 0, "", trailing, "", "", "", 0, 0, 0, "", "", "", ""]
        # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncPresent, algoStrategy
        f += [0, "", "IB", 0, 0, ""]
        # solicited, whatIf, status, 9 margin fields, commission, min/max commission,
        # commissionCurrency, warningText, randomizeSize, randomizePrice, #conditions
        f += [0, 0, o.status, *[""] * 9, "", "", "", "", "", 0, 0, 0]
        # adjustedOrderType .. usePriceMgmtAlgo (16 fields)
        f += ["None", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", ""]
        if version >= 159:
            f += [""]  # duration
        if version >= 160:
            f += [""]  # postToAts
        if version >= 162:
            f += [0]  # autoCancelParent
        if version >= 170:
            f += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf
        return f

    def _completed_order(self, o: FakeOrder, version: int) -> list[Any]:
        f: list[Any] = [101, *self._order_head(o)]
        # permId, outsideRth, hidden, discretionaryAmt, goodAfterTime, faGroup, faMethod,
        # faPercentage
        f += [o.perm_id, 0, 0, 0, "", "", "", ""]
        if version < 177:
            f += [""]  # faProfile
        # modelCode .. deltaNeutralAuxPrice (23 fields)
        f += ["", "", "", "", "", 0, "", -1, "", "", "", "", "", 0, 0, 0, "", 3, 0, "", 0, "", ""]
        # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent,
        # comboLegsDescrip, #legs, #orderLegs, #params, scaleInit, scaleSubs, increment, hedgeType
        f += [0, 0, "", "", "", 0, 0, 0, "", "", "", ""]
        # clearingAccount, clearingIntent, notHeld, dncPresent, algoStrategy
        f += ["", "IB", 0, 0, ""]
        # solicited, status, randomizeSize, randomizePrice, #conditions
        f += [0, o.status, 0, 0, 0]
        # trailStopPrice, lmtPriceOffset, cashQty, dontUseAutoPriceForHedge, isOmsContainer,
        # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent, shareholder,
        # imbalanceOnly, routeMarketableToBbo, parentPermId, completedTime, completedStatus
        when = o.executions[-1].time if o.executions else datetime.now(UTC)
        f += ["", "", "", 0, 0, "", o.filled, 0, 0, "", 0, 0, 0, _ib_time(when),
              o.reason or o.status]
        if version >= 170:
            f += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf
        return f
    # fmt: on


@contextmanager
def fake_tws(bars: pl.DataFrame | None = None, **kwargs: Any) -> Iterator[FakeTWS]:
    """Start a :class:`FakeTWS` for the duration of a ``with`` block."""
    server = FakeTWS(bars, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def daily_bars(symbol: str, start: date, days: int, base: float = 100.0) -> pl.DataFrame:
    """Deterministic daily bars on weekdays, in the canonical source shape."""
    rows = []
    d, i = start, 0
    while len(rows) < days:
        if d.weekday() < 5:
            o = base + i
            rows.append(
                (symbol, "1d", datetime(d.year, d.month, d.day), o, o + 2, o - 1, o + 1, 1000.0 + i)
            )
            i += 1
        d += timedelta(days=1)
    return _frame(rows)


def intraday_bars(
    symbol: str, day: date, minutes: int, count: int, base: float = 50.0
) -> pl.DataFrame:
    """``count`` bars of ``minutes`` from the 09:30 New York open of ``day`` (ts naive UTC)."""
    open_utc = datetime(day.year, day.month, day.day, 9, 30, tzinfo=ZoneInfo("America/New_York"))
    open_utc = open_utc.astimezone(UTC).replace(tzinfo=None)
    timeframe = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h"}[minutes]
    rows = []
    for i in range(count):
        o = base + i / 10
        rows.append(
            (
                symbol,
                timeframe,
                open_utc + timedelta(minutes=minutes * i),
                o,
                o + 0.5,
                o - 0.25,
                o + 0.1,
                10.0 * (i + 1),
            )
        )
    return _frame(rows)


def _frame(rows: list[tuple]) -> pl.DataFrame:
    from trading_pipeline.marketdata.bars import SOURCE_SCHEMA

    return pl.DataFrame(rows, schema=SOURCE_SCHEMA, orient="row")
