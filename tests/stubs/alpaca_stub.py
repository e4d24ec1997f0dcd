"""A local Alpaca REST stub that the real alpaca-py clients talk to through ``url_override``.

It speaks the wire shape of the Trading API v2 (account, orders, positions, fill activities)
and of the Market Data API v2 (``/v2/stocks/bars`` with pagination) and the corporate actions API
``/v1/corporate-actions`` (with pagination), checks the
``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers, and has knobs to inject the faults
the adapters must survive: HTTP errors, dropped connections (before or after an order is
accepted), order rejects, partial fills and malformed payloads.

One server serves both APIs (the paths do not overlap), so ``stub.url`` is the
``url_override`` of TradingClient and of StockHistoricalDataClient alike.

Nothing fills on its own: tests call :meth:`AlpacaStub.fill` (one order, part or all) or
:meth:`AlpacaStub.advance` (every marketable open order at the current prices: a stop once the
price reaches its stop price, a trailing stop once the price falls its trail below the best price
since it was placed, ``hwm``, or above it for a buy).

``PATCH /v2/orders/{id}`` replaces ``qty``, ``limit_price``, ``stop_price`` and ``trail`` (the
trail replaces trail_percent or trail_price, whichever the order has) with a new order that
``replaces`` the old; a replaced bracket leg stays a leg of its entry.

Brackets (``order_class: bracket`` with ``take_profit.limit_price`` and ``stop_loss.stop_price``)
make an entry and two legs (a limit and a stop on the other side, with Alpaca's own ids and
client ids, the entry's time_in_force). The legs are ``held`` until the entry fills, then
``new``; a leg that fills cancels the other; cancelling the entry cancels its working legs and
cancelling a leg cancels the other one. The POST reply and ``GET /v2/orders/{id}?nested=true``
roll the legs up under the entry; ``GET /v2/orders?nested=true`` lists entries with their legs
(an entry whose legs still work is listed as open), without it the legs are listed as orders.
:meth:`AlpacaStub.leg` and :meth:`AlpacaStub.fill_leg` reach a leg by its entry's client id;
:attr:`AlpacaStub.bodies` keeps every request body.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import polars as pl

NEW_YORK = ZoneInfo("America/New_York")
ALPACA_TIMEFRAMES = {
    "1Min": "1m",
    "5Min": "5m",
    "15Min": "15m",
    "30Min": "30m",
    "1Hour": "1h",
    "1Day": "1d",
}
OPEN_STATUSES = {
    "new",
    "accepted",
    "pending_new",
    "partially_filled",
    "pending_cancel",
    "pending_replace",
    "held",
}


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _now() -> datetime:
    return datetime.now(UTC)


class _Fault(Exception):
    """Raised inside a handler to answer with an Alpaca-style error body."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if code is not None:
            self.body = {"code": code, "message": message}


@dataclass
class StubOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None = None
    trail_percent: Decimal | None = None
    trail_price: Decimal | None = None
    status: str = "accepted"
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    order_class: str = ""  # "" (simple) or "bracket" (the entry and its legs)
    legs: list[str] = field(default_factory=list)  # a bracket entry's leg ids: take-profit, stop-loss
    parent_id: str | None = None  # a leg's entry
    hwm: Decimal | None = None  # a trailing stop's best price since it was placed (high for a sell)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "submitted_at": _iso(self.created_at),
            "filled_at": _iso(self.filled_at),
            "expired_at": None,
            "canceled_at": _iso(self.canceled_at),
            "failed_at": None,
            "replaced_at": _iso(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": _num(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": _num(self.limit_price),
            "stop_price": _num(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": _num(self.trail_percent),
            "trail_price": _num(self.trail_price),
            "hwm": _num(self.hwm),
        }


@dataclass
class StubPosition:
    symbol: str
    qty: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)


class AlpacaStub:
    """Stateful fake Alpaca; start it, point alpaca-py at :attr:`url`, stop it."""

    def __init__(
        self,
        api_key: str = "stub-key",
        secret_key: str = "stub-secret",
        *,
        bars: pl.DataFrame | None = None,
        page_size: int = 10_000,
        cash: Decimal = Decimal("100000"),
        daily_stamp: str = "ny_midnight",
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.page_size = page_size
        self.daily_stamp = daily_stamp  # "ny_midnight" (what Alpaca does) or "utc_midnight"
        self.account_id = str(uuid.uuid4())
        self.cash = cash
        self.prices: dict[str, Decimal] = {}
        self.orders: dict[str, StubOrder] = {}
        self.positions: dict[str, StubPosition] = {}
        self.activities: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of every request
        self._bars = bars if bars is not None else pl.DataFrame()
        self.assets: list[dict[str, Any]] = []  # GET /v2/assets (set_assets)
        self.corporate_actions: dict[str, list[dict[str, Any]]] = {}  # GET /v1/corporate-actions
        self._lock = threading.RLock()
        self._faults: list[tuple[str, Any]] = []  # queued one-shot faults, first match wins
        self._server: ThreadingHTTPServer | None = None
        self._connections: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> AlpacaStub:
        handler = type("_BoundHandler", (_Handler,), {"stub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="alpaca-stub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:  # a stopped stub must look down, also to pooled keep-alive connections
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()

    def __enter__(self) -> AlpacaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---------------------------------------------------------------- test knobs
    def set_bars(self, bars: pl.DataFrame) -> None:
        """Serve these canonical bars (SOURCE_SCHEMA: ts naive UTC, daily at session midnight)."""
        with self._lock:
            self._bars = bars

    def set_assets(self, assets: list[dict[str, Any]]) -> None:
        """Serve these assets at ``GET /v2/assets``: dicts with ``symbol`` and optionally
        ``exchange`` (NASDAQ), ``status`` (active), ``tradable`` (True), ``class`` (us_equity)."""
        full = []
        for a in assets:
            full.append({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, a["symbol"])), "class": "us_equity",
                         "exchange": "NASDAQ", "name": a["symbol"], "status": "active", "tradable": True,
                         "marginable": True, "shortable": True, "easy_to_borrow": True, "fractionable": True,
                         **a})
        with self._lock:
            self.assets = full

    def set_corporate_actions(self, actions: dict[str, list[dict[str, Any]]], *, complete: bool = True) -> None:
        """Serve these at ``GET /v1/corporate-actions``: Alpaca's type keys (``forward_splits``,
        ``reverse_splits``, ``cash_dividends``, ``name_changes``, ``worthless_removals``...) to
        lists of items in Alpaca's wire shape. ``complete`` fills what a test leaves out (``id``,
        CUSIPs, ``process_date`` = the ex-date, ``special``/``foreign`` False); ``complete=False``
        serves the items exactly as given (a payload with a field missing)."""
        full: dict[str, list[dict[str, Any]]] = {}
        for kind, items in actions.items():
            full[kind] = []
            for a in items:
                sym = a.get("symbol") or a.get("old_symbol") or "X"
                filled = {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{kind}:{sym}:{a.get('ex_date') or a.get('process_date')}")),
                          "cusip": "000000000", "old_cusip": "000000000", "new_cusip": "000000001",
                          "special": False, "foreign": False, "process_date": a.get("ex_date")}
                keep = {"forward_splits": ("id", "cusip", "process_date"),
                        "reverse_splits": ("id", "old_cusip", "new_cusip", "process_date"),
                        "cash_dividends": ("id", "cusip", "special", "foreign", "process_date"),
                        "name_changes": ("id", "old_cusip", "new_cusip"),
                        "worthless_removals": ("id", "cusip")}.get(kind, ("id",))
                full[kind].append({**{k: filled[k] for k in keep}, **a} if complete else dict(a))
        with self._lock:
            self.corporate_actions = full

    def set_price(self, symbol: str, price: Decimal | float | str) -> None:
        with self._lock:
            self.prices[symbol] = Decimal(str(price))

    def fail_next(
        self, n: int = 1, status: int = 500, message: str = "internal server error"
    ) -> None:
        """The next ``n`` requests answer ``status`` without touching state."""
        with self._lock:
            self._faults.extend([("status", (status, message))] * n)

    def pass_next(self, n: int = 1) -> None:
        """Let the next ``n`` requests through untouched before the faults queued after this."""
        with self._lock:
            self._faults.extend([("pass", None)] * n)

    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` requests get their connection closed before any handling."""
        with self._lock:
            self._faults.extend([("drop", None)] * n)

    def drop_after_next_submit(self) -> None:
        """The next order submit is accepted (the order exists) but the reply never arrives."""
        with self._lock:
            self._faults.append(("drop_after_submit", None))

    def drop_reply_next(self, n: int = 1) -> None:
        """The next ``n`` requests are carried out (state changes) but their replies never arrive."""
        with self._lock:
            self._faults.extend([("drop_reply", None)] * n)

    def reject_next_order(
        self, status: int = 403, message: str = "insufficient buying power", code: int = 40310000
    ) -> None:
        """The next order submit is refused with Alpaca's error body; no order is created."""
        with self._lock:
            self._faults.append(("reject_submit", (status, message, code)))

    def strip_legs_next_submit(self) -> None:
        """The next order submit is carried out, but its reply has ``legs: null``."""
        with self._lock:
            self._faults.append(("strip_legs", None))

    def leg(self, entry_client_order_id: str, which: str) -> StubOrder:
        """A bracket's leg: ``which`` is ``take_profit`` or ``stop_loss``."""
        with self._lock:
            entry = self.order(entry_client_order_id)
            assert entry.legs, f"{entry_client_order_id} is not a bracket"
            return self.orders[entry.legs[0 if which == "take_profit" else 1]]

    def fill_leg(
        self,
        entry_client_order_id: str,
        which: str,
        qty: Decimal | float | str | None = None,
        price: Decimal | float | str | None = None,
    ) -> None:
        """Fill a bracket's leg (``take_profit`` or ``stop_loss``), part or all."""
        with self._lock:
            self._fill(
                self.leg(entry_client_order_id, which),
                None if qty is None else Decimal(str(qty)),
                None if price is None else Decimal(str(price)),
            )

    def malformed_next(
        self, n: int = 1, body: str = '{"bars": {"AAPL": [{"t": "not-a-time"}]}'
    ) -> None:
        """The next ``n`` requests answer 200 with this body (invalid JSON or wrong shape)."""
        with self._lock:
            self._faults.extend([("malformed", body)] * n)

    def order(self, client_order_id: str) -> StubOrder:
        """The order the stub holds under this client_order_id (the test's view of the truth)."""
        with self._lock:
            matches = [o for o in self.orders.values() if o.client_order_id == client_order_id]
            assert len(matches) == 1, (
                f"{len(matches)} orders with client_order_id {client_order_id!r}"
            )
            return matches[0]

    def fill(
        self,
        client_order_id: str,
        qty: Decimal | float | str | None = None,
        price: Decimal | float | str | None = None,
    ) -> None:
        """Fill part (``qty``) or the rest of an open order, at ``price`` or the symbol's price."""
        with self._lock:
            order = self.order(client_order_id)
            while order.replaced_by is not None:
                order = self.orders[order.replaced_by]
            self._fill(
                order,
                None if qty is None else Decimal(str(qty)),
                None if price is None else Decimal(str(price)),
            )

    def advance(self) -> int:
        """Fill every marketable open order completely at the current prices; return how many."""
        n = 0
        with self._lock:
            for order in list(self.orders.values()):
                if not order.is_open or order.status == "held" or order.symbol not in self.prices:
                    continue
                price = self.prices[order.symbol]
                if order.type == "trailing_stop" and not self._trail_triggered(order, price):
                    continue
                if order.type in ("stop", "stop_limit") and order.stop_price is not None:
                    if (order.side == "buy" and price < order.stop_price) or (
                        order.side == "sell" and price > order.stop_price
                    ):
                        continue  # not triggered
                if order.type == "limit" and order.limit_price is not None:
                    if (order.side == "buy" and price > order.limit_price) or (
                        order.side == "sell" and price < order.limit_price
                    ):
                        continue
                    price = (
                        min(price, order.limit_price)
                        if order.side == "buy"
                        else max(price, order.limit_price)
                    )
                self._fill(order, None, price)
                n += 1
        return n

    @staticmethod
    def _trail_triggered(order: StubOrder, price: Decimal) -> bool:
        """Move a trailing stop's high-water mark to ``price`` if better; whether ``price`` reached
        the stop (the mark less the trail for a sell, plus it for a buy)."""
        sell = order.side == "sell"
        if order.hwm is None or (price > order.hwm if sell else price < order.hwm):
            order.hwm = price
        if order.trail_percent is not None:
            offset = order.hwm * order.trail_percent / 100
        else:
            offset = order.trail_price or Decimal(0)
        return price <= order.hwm - offset if sell else price >= order.hwm + offset

    def reject(self, client_order_id: str, reason: str = "rejected by exchange") -> None:
        """Reject an accepted order asynchronously (status ``rejected``)."""
        with self._lock:
            order = self.order(client_order_id)
            order.status = "rejected"
            order.updated_at = _now()

    # ---------------------------------------------------------------- state
    def _fill(self, order: StubOrder, qty: Decimal | None, price: Decimal | None) -> None:
        if not order.is_open or order.status == "held":
            raise ValueError(f"order {order.client_order_id} is {order.status}, cannot fill")
        qty = order.remaining if qty is None else min(qty, order.remaining)
        price = (
            price
            if price is not None
            else order.limit_price
            if order.type == "limit"
            else self.prices.get(order.symbol)
        )
        if price is None:
            raise ValueError(f"no price for {order.symbol}: call set_price() or pass price=")
        prev = order.filled_qty
        order.filled_qty = prev + qty
        order.filled_avg_price = (
            (order.filled_avg_price or Decimal(0)) * prev + price * qty
        ) / order.filled_qty
        order.status = "filled" if order.remaining == 0 else "partially_filled"
        order.updated_at = now = _now()
        if order.status == "filled":
            order.filled_at = now
            for leg_id in order.legs:  # a bracket's entry filled: its legs work now
                if self.orders[leg_id].status == "held":
                    self.orders[leg_id].status, self.orders[leg_id].updated_at = "new", now
        if order.parent_id is not None:  # a leg filled: the other one is cancelled
            for leg_id in self.orders[order.parent_id].legs:
                other = self.orders[leg_id]
                if leg_id != order.id and other.is_open:
                    other.status, other.canceled_at, other.updated_at = "canceled", now, now
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        pos = self.positions.setdefault(order.symbol, StubPosition(order.symbol))
        new_qty = pos.qty + signed
        if pos.qty == 0 or (new_qty != 0 and (pos.qty > 0) != (new_qty > 0)):
            pos.avg_price = price  # opened or flipped
        elif (pos.qty > 0) == (signed > 0):
            pos.avg_price = (pos.avg_price * abs(pos.qty) + price * qty) / abs(new_qty)
        # reducing keeps the average entry price
        pos.qty = new_qty
        if pos.qty == 0:
            del self.positions[order.symbol]
        self.activities.append(
            {
                "id": f"{now.strftime('%Y%m%d%H%M%S%f')}::{uuid.uuid4()}",
                "activity_type": "FILL",
                "transaction_time": _iso(now),
                "type": "fill" if order.status == "filled" else "partial_fill",
                "price": _num(price),
                "qty": _num(qty),
                "side": order.side,
                "symbol": order.symbol,
                "leaves_qty": _num(order.remaining),
                "order_id": order.id,
                "cum_qty": _num(order.filled_qty),
                "order_status": order.status,
            }
        )

    def _equity(self) -> Decimal:
        return self.cash + sum(
            (p.qty * self.prices.get(p.symbol, p.avg_price) for p in self.positions.values()),
            Decimal(0),
        )

    def _buying_power(self) -> Decimal:
        return max(self.cash, Decimal(0))

    # ---------------------------------------------------------------- routes
    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        routes: list[tuple[str, str, Any]] = [
            ("GET", "/v2/account", self._get_account),
            ("GET", "/v2/orders:by_client_order_id", self._get_order_by_client_id),
            ("GET", "/v2/orders", self._list_orders),
            ("POST", "/v2/orders", self._submit),
            ("GET", "/v2/orders/", self._get_order),
            ("PATCH", "/v2/orders/", self._replace),
            ("DELETE", "/v2/orders/", self._cancel),
            ("GET", "/v2/positions", self._list_positions),
            ("GET", "/v2/account/activities/FILL", self._fill_activities),
            ("GET", "/v2/stocks/bars", self._stock_bars),
            ("GET", "/v2/assets", self._list_assets),
            ("GET", "/v1/corporate-actions", self._corporate_actions),
        ]
        for m, prefix, fn in routes:
            if m == method and (
                path == prefix or (prefix.endswith("/") and path.startswith(prefix))
            ):
                arg = path[len(prefix) :] if prefix.endswith("/") else None
                return fn(query, body) if arg is None else fn(arg, query, body)
        raise _Fault(404, "endpoint not found")

    def _get_account(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        equity = self._equity()
        return 200, {
            "id": self.account_id,
            "account_number": "PA0STUB0001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _num(self._buying_power()),
            "regt_buying_power": _num(self._buying_power()),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": _num(self._buying_power()),
            "cash": _num(self.cash),
            "accrued_fees": "0",
            "portfolio_value": _num(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:00:00Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": _num(equity),
            "last_equity": _num(equity),
            "long_market_value": "0",
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def _find(self, order_id: str) -> StubOrder:
        if order_id not in self.orders:
            raise _Fault(404, f"order not found for {order_id}", 40410000)
        return self.orders[order_id]

    def _json(self, order: StubOrder, nested: bool) -> dict[str, Any]:
        out = order.to_json()
        if nested and order.legs:
            out["legs"] = [self.orders[i].to_json() for i in order.legs]
        return out

    def _get_order(self, order_id: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._json(self._find(order_id), query.get("nested", "").lower() == "true")

    def _get_order_by_client_id(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        coid = query.get("client_order_id", "")
        for o in self.orders.values():
            if o.client_order_id == coid:
                return 200, o.to_json()
        raise _Fault(404, "order not found", 40410000)

    def _list_orders(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        status = query.get("status", "open")
        limit = min(int(query.get("limit", 50)), 500)
        nested = query.get("nested", "").lower() == "true"
        orders = sorted(
            self.orders.values(),
            key=lambda o: o.created_at,
            reverse=query.get("direction") != "asc",
        )
        if nested:  # legs are rolled up under their entry
            orders = [o for o in orders if o.parent_id is None]
        if status == "open":
            orders = [
                o for o in orders
                if o.is_open or (nested and any(self.orders[i].is_open for i in o.legs))
            ]
        elif status == "closed":
            orders = [o for o in orders if not o.is_open]
        if "symbols" in query:
            wanted = set(query["symbols"].split(","))
            orders = [o for o in orders if o.symbol in wanted]
        return 200, [self._json(o, nested) for o in orders[:limit]]

    def _submit(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _Fault(400, "request body format is invalid", 40010000)
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if len(coid) > 128:
            raise _Fault(422, "client_order_id must be no more than 128 characters", 40010001)
        if any(o.client_order_id == coid for o in self.orders.values()):
            raise _Fault(422, "client_order_id must be unique", 40010001)
        symbol, side, otype, tif = (
            body.get("symbol"),
            body.get("side"),
            body.get("type"),
            body.get("time_in_force"),
        )
        if not symbol:
            raise _Fault(422, "symbol is required", 40010001)
        if side not in ("buy", "sell"):
            raise _Fault(422, "invalid side", 40010001)
        if otype not in ("market", "limit", "stop", "stop_limit", "trailing_stop"):
            raise _Fault(422, f"invalid order type {otype!r}", 40010001)
        if tif not in ("day", "gtc", "ioc", "fok", "opg", "cls"):
            raise _Fault(422, "invalid time_in_force", 40010001)
        if tif in ("opg", "cls") and otype not in ("market", "limit"):
            raise _Fault(422, f"{tif} orders must be market or limit", 40010001)
        stop_price, trail_percent, trail_price = (
            None if body.get(k) is None else Decimal(str(body[k])) for k in ("stop_price", "trail_percent", "trail_price")
        )
        if otype in ("stop", "stop_limit") and stop_price is None:
            raise _Fault(422, "stop_price is required", 40010001)
        if otype not in ("stop", "stop_limit") and stop_price is not None:
            raise _Fault(422, f"{otype} orders require no stop_price", 40010001)
        if otype == "trailing_stop" and (trail_percent is None) == (trail_price is None):
            raise _Fault(422, "trailing_stop orders require exactly one of trail_percent and trail_price", 40010001)
        if otype != "trailing_stop" and (trail_percent is not None or trail_price is not None):
            raise _Fault(422, f"{otype} orders require no trail", 40010001)
        try:
            qty = Decimal(str(body.get("qty")))
        except ArithmeticError:
            raise _Fault(422, "qty is required", 40010001) from None
        if not qty.is_finite() or qty <= 0:
            raise _Fault(422, "qty must be > 0", 40010001)
        limit_price = body.get("limit_price")
        if otype in ("limit", "stop_limit") and limit_price is None:
            raise _Fault(422, f"{otype} orders require limit_price", 40010001)
        if otype not in ("limit", "stop_limit") and limit_price is not None:
            raise _Fault(422, f"{otype} orders require no limit_price", 40010001)
        limit = None if limit_price is None else Decimal(str(limit_price))
        price = limit if limit is not None else self.prices.get(symbol)
        if side == "buy" and price is not None and qty * price > self._buying_power():
            raise _Fault(403, "insufficient buying power", 40310000)
        order = StubOrder(
            id=str(uuid.uuid4()),
            client_order_id=coid,
            symbol=symbol,
            side=side,
            qty=qty,
            type=otype,
            time_in_force=tif,
            limit_price=limit,
            stop_price=stop_price,
            trail_percent=trail_percent,
            trail_price=trail_price,
            hwm=self.prices.get(symbol) if otype == "trailing_stop" else None,
        )
        order_class = body.get("order_class") or ""
        legs: list[StubOrder] = []
        if order_class == "bracket":
            legs = self._bracket_legs(order, body)
        elif order_class not in ("", "simple"):
            raise _Fault(422, f"order_class {order_class!r} is not supported here", 40010001)
        elif body.get("take_profit") is not None or body.get("stop_loss") is not None:
            raise _Fault(422, "take_profit and stop_loss need order_class bracket", 40010001)
        self.orders[order.id] = order
        for leg in legs:
            self.orders[leg.id] = leg
        return 200, self._json(order, nested=True)

    def _bracket_legs(self, entry: StubOrder, body: dict[str, Any]) -> list[StubOrder]:
        """Validate a bracket and make its take-profit and stop-loss legs (entry linked to them)."""
        if entry.type not in ("market", "limit"):
            raise _Fault(422, "bracket orders must be market or limit orders", 40010001)
        if entry.time_in_force not in ("day", "gtc"):
            raise _Fault(422, "bracket orders must be day or gtc", 40010001)
        tp = (body.get("take_profit") or {}).get("limit_price")
        sl = (body.get("stop_loss") or {}).get("stop_price")
        if tp is None:
            raise _Fault(422, "bracket orders require take_profit.limit_price", 40010001)
        if sl is None:
            raise _Fault(422, "bracket orders require stop_loss.stop_price", 40010001)
        tp_price, sl_price = Decimal(str(tp)), Decimal(str(sl))
        if (entry.side == "buy") != (tp_price > sl_price):
            raise _Fault(422, "take_profit.limit_price must be on the profit side of stop_loss.stop_price", 40010001)
        side = "sell" if entry.side == "buy" else "buy"
        legs = [
            StubOrder(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=entry.symbol, side=side,
                      qty=entry.qty, type=kind, time_in_force=entry.time_in_force, limit_price=limit,
                      stop_price=stop, status="held", order_class="bracket", parent_id=entry.id)
            for kind, limit, stop in (("limit", tp_price, None), ("stop", None, sl_price))
        ]
        entry.order_class, entry.legs = "bracket", [leg.id for leg in legs]
        return legs

    def _replace(self, order_id: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """PATCH: a new order with the given ``qty``, ``limit_price``, ``stop_price`` or ``trail``
        (the trail replaces trail_percent or trail_price, whichever the order has); the old one is
        ``replaced``. A bracket leg's replacement stays a leg of its entry (held while it was)."""
        old = self._find(order_id)
        if not old.is_open:
            raise _Fault(422, f"order is not replaceable (status {old.status})", 42210000)
        body = body or {}
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if any(o.client_order_id == coid for o in self.orders.values()):
            raise _Fault(422, "client_order_id must be unique", 40010001)
        qty = Decimal(str(body["qty"])) if body.get("qty") is not None else old.qty
        if qty <= old.filled_qty:
            raise _Fault(422, "qty must be greater than the filled quantity", 40010001)
        limit, stop, trail = (
            None if body.get(k) is None else Decimal(str(body[k])) for k in ("limit_price", "stop_price", "trail")
        )
        if limit is not None and old.type not in ("limit", "stop_limit"):
            raise _Fault(422, f"cannot set limit_price on a {old.type} order", 40010001)
        if stop is not None and old.type not in ("stop", "stop_limit"):
            raise _Fault(422, f"cannot set stop_price on a {old.type} order", 40010001)
        if trail is not None and old.type != "trailing_stop":
            raise _Fault(422, f"cannot set trail on a {old.type} order", 40010001)
        for name, value in (("limit_price", limit), ("stop_price", stop), ("trail", trail)):
            if value is not None and value <= 0:
                raise _Fault(422, f"{name} must be > 0", 40010001)
        trail_percent, trail_price = old.trail_percent, old.trail_price
        if trail is not None:
            if old.trail_percent is not None:
                trail_percent = trail
            else:
                trail_price = trail
        now = _now()
        new = StubOrder(
            id=str(uuid.uuid4()),
            client_order_id=coid,
            symbol=old.symbol,
            side=old.side,
            qty=qty,
            type=old.type,
            time_in_force=body.get("time_in_force") or old.time_in_force,
            limit_price=limit if limit is not None else old.limit_price,
            stop_price=stop if stop is not None else old.stop_price,
            trail_percent=trail_percent,
            trail_price=trail_price,
            status="held" if old.status == "held" else "partially_filled" if old.filled_qty else "accepted",
            filled_qty=old.filled_qty,
            filled_avg_price=old.filled_avg_price,
            replaces=old.id,
            order_class=old.order_class if old.parent_id else "",
            parent_id=old.parent_id,
        )
        if old.legs:  # an entry's replacement keeps its legs
            new.order_class, new.legs = old.order_class, old.legs
            for leg_id in old.legs:
                self.orders[leg_id].parent_id = new.id
            old.legs = []
        if old.parent_id is not None:  # a leg's replacement takes its place in the entry
            parent = self.orders[old.parent_id]
            parent.legs = [new.id if i == old.id else i for i in parent.legs]
        new.hwm = old.hwm
        old.status, old.replaced_at, old.replaced_by, old.updated_at = "replaced", now, new.id, now
        self.orders[new.id] = new
        return 200, new.to_json()

    def _cancel(self, order_id: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        order = self._find(order_id)
        if not order.is_open:
            raise _Fault(422, f"order is not cancelable (status {order.status})", 42210000)
        # an entry takes its legs with it; a leg takes the other leg (one-cancels-other)
        linked = order.legs or (self.orders[order.parent_id].legs if order.parent_id else [])
        for o in [order, *(self.orders[i] for i in linked)]:
            if o.is_open:
                o.status, o.canceled_at, o.updated_at = "canceled", _now(), _now()
        return 204, None

    def _list_positions(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        out = []
        for p in sorted(self.positions.values(), key=lambda p: p.symbol):
            price = self.prices.get(p.symbol, p.avg_price)
            out.append(
                {
                    "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, p.symbol)),
                    "symbol": p.symbol,
                    "exchange": "NASDAQ",
                    "asset_class": "us_equity",
                    "asset_marginable": True,
                    "avg_entry_price": _num(p.avg_price),
                    "qty": _num(p.qty),
                    "qty_available": _num(p.qty),
                    "side": "long" if p.qty > 0 else "short",
                    "market_value": _num(p.qty * price),
                    "cost_basis": _num(p.qty * p.avg_price),
                    "unrealized_pl": _num(p.qty * (price - p.avg_price)),
                    "current_price": _num(price),
                }
            )
        return 200, out

    def _fill_activities(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        acts = list(self.activities)
        if "after" in query:
            after = datetime.fromisoformat(query["after"])
            acts = [a for a in acts if datetime.fromisoformat(a["transaction_time"]) > after]
        if query.get("direction", "desc") == "desc":
            acts.reverse()
        if "page_token" in query:
            ids = [a["id"] for a in acts]
            acts = acts[ids.index(query["page_token"]) + 1 :] if query["page_token"] in ids else []
        return 200, acts[: min(int(query.get("page_size", 100)), 100)]

    def _list_assets(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """As Alpaca filters the asset list: by ``status``, ``asset_class`` and ``exchange``."""
        out = [a for a in self.assets
               if all(not query.get(q) or a[k] == query[q]
                      for q, k in (("status", "status"), ("asset_class", "class"), ("exchange", "exchange")))]
        return 200, out

    def _corporate_actions(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """As Alpaca filters them: by ``symbols`` (any symbol an item names), ``types`` (singular:
        ``forward_split`` is ``forward_splits``) and ``start``/``end`` on the ex-date (the process
        date for items without one), ``limit`` items a page with a ``page_token``."""
        symbols = set(query["symbols"].split(",")) if query.get("symbols") else None
        types = {f"{t}s" for t in query["types"].split(",")} if query.get("types") else None
        start, end = query.get("start", "0000-00-00"), query.get("end", "9999-99-99")
        items: list[tuple[str, dict[str, Any]]] = []
        for kind in sorted(self.corporate_actions):
            if types is not None and kind not in types:
                continue
            for a in self.corporate_actions[kind]:
                named = {a.get(k) for k in ("symbol", "old_symbol", "new_symbol", "acquiree_symbol", "source_symbol")}
                day = str(a.get("ex_date") or a.get("process_date") or a.get("effective_date") or "")
                if (symbols is None or named & symbols) and start <= day <= end:
                    items.append((kind, a))
        offset = int(base64.b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
        size = min(int(query.get("limit", 1000)), self.page_size, 1000)
        out: dict[str, list[dict[str, Any]]] = {}
        for kind, a in items[offset : offset + size]:
            out.setdefault(kind, []).append(a)
        more = offset + size < len(items)
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return 200, {"corporate_actions": out, "next_page_token": token}

    def _alpaca_ts(self, frame: pl.DataFrame, timeframe: str) -> list[datetime]:
        stamps = []
        for ts in frame["ts"].to_list():
            if timeframe != "1d":
                stamps.append(ts.replace(tzinfo=UTC))
            elif self.daily_stamp == "utc_midnight":
                stamps.append(datetime(ts.year, ts.month, ts.day, tzinfo=UTC))
            else:
                stamps.append(datetime(ts.year, ts.month, ts.day, tzinfo=NEW_YORK).astimezone(UTC))
        return stamps

    def _stock_bars(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if "symbols" not in query or not query["symbols"]:
            raise _Fault(400, "symbols is required", 40010001)
        timeframe = ALPACA_TIMEFRAMES.get(query.get("timeframe", ""))
        if timeframe is None:
            raise _Fault(422, f"invalid timeframe {query.get('timeframe')!r}", 42210000)
        symbols = query["symbols"].split(",")
        start = (
            datetime.fromisoformat(query["start"])
            if "start" in query
            else datetime.min.replace(tzinfo=UTC)
        )
        end = (
            datetime.fromisoformat(query["end"])
            if "end" in query
            else _now() - timedelta(minutes=15)
        )
        frame = self._bars
        rows: list[tuple[str, datetime, dict[str, Any]]] = []
        if frame.height:
            frame = frame.filter(
                pl.col("symbol").is_in(symbols) & (pl.col("timeframe") == timeframe)
            )
            for stamp, r in zip(
                self._alpaca_ts(frame, timeframe), frame.iter_rows(named=True), strict=True
            ):
                if start <= stamp <= end:
                    rows.append((r["symbol"], stamp, r))
        rows.sort(key=lambda x: (x[0], x[1]))
        offset = (
            int(base64.b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
        )
        size = min(int(query.get("limit", 1000)), self.page_size, 10_000)
        page = rows[offset : offset + size]
        out: dict[str, list[dict[str, Any]]] = {}
        for symbol, stamp, r in page:
            out.setdefault(symbol, []).append(
                {
                    "t": _iso(stamp),
                    "o": r["open"],
                    "h": r["high"],
                    "l": r["low"],
                    "c": r["close"],
                    "v": r["volume"],
                    "n": 1,
                    "vw": r["close"],
                }
            )
        more = offset + size < len(rows)
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return 200, {"bars": out, "next_page_token": token, "currency": "USD"}

    # ---------------------------------------------------------------- dispatch
    def _next_fault(self, method: str, path: str) -> tuple[str, Any] | None:
        with self._lock:
            for i, (kind, _arg) in enumerate(self._faults):
                is_submit = method == "POST" and path == "/v2/orders"
                if kind in ("drop_after_submit", "reject_submit", "strip_legs") and not is_submit:
                    continue
                return self._faults.pop(i)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: AlpacaStub

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )  # no 40 ms Nagle stalls
        with self.stub._lock:
            self.stub._connections.append(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, payload: Any = None, raw: str | None = None) -> None:
        data = (
            b""
            if payload is None and raw is None
            else (raw if raw is not None else json.dumps(payload)).encode()
        )
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        self.wfile.flush()

    def _dispatch(self, method: str) -> None:
        stub = self.stub
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        with stub._lock:
            stub.requests.append((method, path))
        fault = stub._next_fault(method, path)
        if fault is not None:
            kind, arg = fault
            if kind == "drop":
                return self._drop()
            if kind == "status":
                return self._reply(arg[0], {"message": arg[1]})
            if kind == "malformed":
                return self._reply(200, raw=arg)
            if kind == "reject_submit":
                return self._reply(arg[0], {"code": arg[2], "message": arg[1]})
        if (
            self.headers.get("APCA-API-KEY-ID") != stub.api_key
            or self.headers.get("APCA-API-SECRET-KEY") != stub.secret_key
        ):
            return self._reply(401, {"code": 40110000, "message": "request is not authorized"})
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            return self._reply(400, {"code": 40010000, "message": "request body format is invalid"})
        with stub._lock:
            stub.bodies.append((method, path, body))
        try:
            with stub._lock:
                status, payload = stub._handle(method, path, query, body)
        except _Fault as f:
            return self._reply(f.status, f.body)
        if fault is not None and fault[0] in ("drop_after_submit", "drop_reply"):
            return self._drop()
        if fault is not None and fault[0] == "strip_legs" and isinstance(payload, dict):
            payload = {**payload, "legs": None}
        self._reply(status, payload)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


def running_stub(**kwargs: Any) -> Iterator[AlpacaStub]:
    """Generator for pytest fixtures: ``yield from running_stub(bars=...)``."""
    stub = AlpacaStub(**kwargs).start()
    try:
        yield stub
    finally:
        stub.stop()
