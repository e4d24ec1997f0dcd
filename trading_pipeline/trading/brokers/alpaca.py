"""Alpaca as a :class:`~trading_pipeline.trading.brokers.base.Broker`, through alpaca-py's ``TradingClient``.

Why it looks the way it does:

- **Our client_order_id is the key.** Alpaca enforces unique ``client_order_id``s, so a
  retried submit gets HTTP 422 "client_order_id must be unique"; we then fetch and return
  the existing order, which makes ``submit`` idempotent even when a reply was lost.
- **Replace makes a new order.** Alpaca's PATCH creates a new order (new id, new
  client_order_id) and marks the old one ``replaced``. We follow ``replaced_by`` from the
  order carrying our id to the live one, and walk ``replaces`` back from a listed order to
  our id, so callers keep seeing one order under their id. No local state: it survives a
  restart.
- **Fills come from fill activities** (``/v2/account/activities/FILL``), which carry each
  execution; if they cannot be read, one aggregate fill is derived from
  ``filled_qty``/``filled_avg_price`` so fills always sum to the filled quantity.
- **Errors say whether a retry may help**: network errors, 5xx, 429 and unreadable replies
  are ``retryable`` (a retried submit is safe, see above); 4xx are not and carry Alpaca's
  message.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.enums import TimeInForce as AlpacaTif
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
    TrailingStopOrderRequest,
)

from trading_pipeline.marketdata.bars import naive_utc
from trading_pipeline.trading.brokers.base import (
    BrokerAccount,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    refuse_stop_modify,
)
from trading_pipeline.trading.model import OrderRequest, OrderStatus, OrderType, Side

if TYPE_CHECKING:
    from trading_pipeline.settings import Settings

T = TypeVar("T")

# Alpaca's many states folded into ours. States with fills in flight become
# PARTIALLY_FILLED in _status() when filled_qty > 0.
STATUS_MAP: dict[str, OrderStatus] = {
    "pending_new": OrderStatus.NEW,
    "new": OrderStatus.ACCEPTED,
    "accepted": OrderStatus.ACCEPTED,
    "accepted_for_bidding": OrderStatus.ACCEPTED,
    "pending_review": OrderStatus.ACCEPTED,
    "held": OrderStatus.ACCEPTED,
    "pending_cancel": OrderStatus.ACCEPTED,
    "pending_replace": OrderStatus.ACCEPTED,
    "replaced": OrderStatus.ACCEPTED,
    "stopped": OrderStatus.ACCEPTED,
    "suspended": OrderStatus.ACCEPTED,
    "done_for_day": OrderStatus.ACCEPTED,
    "calculated": OrderStatus.ACCEPTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"
ACTIVITY_PAGE_SIZE = 100


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        raise BrokerError(f"Alpaca sent a non-numeric amount {value!r}", retryable=True) from None


def _status(order: AlpacaOrder) -> OrderStatus:
    raw = order.status.value if hasattr(order.status, "value") else str(order.status)
    status = STATUS_MAP.get(raw, OrderStatus.ACCEPTED)
    filled, qty = _dec(order.filled_qty), _dec(order.qty)
    if status in (OrderStatus.NEW, OrderStatus.ACCEPTED) and filled > 0:
        return OrderStatus.FILLED if qty and filled >= qty else OrderStatus.PARTIALLY_FILLED
    return status


def _api_message(exc: APIError) -> str:
    try:
        body = json.loads(str(exc))
        return str(body.get("message") or body)
    except (ValueError, AttributeError):
        return str(exc)[:300] or "no message"


def _naive_utc(value: str | datetime) -> datetime:
    if isinstance(value, str):  # Python 3.11 parses at most microseconds; Alpaca may send nanos
        value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    ts = datetime.fromisoformat(value) if isinstance(value, str) else value
    return naive_utc(ts)


def _alpaca_request(order: OrderRequest, common: dict[str, Any]) -> Any:
    """Our order as alpaca-py's request of its type (Alpaca's ``type`` is our order type; a
    trailing stop's ``trail_amount`` is Alpaca's ``trail_price``)."""
    def num(x: Decimal | None) -> float | None:
        return None if x is None else float(x)

    t = OrderType(order.order_type)
    if t == OrderType.LIMIT:
        return LimitOrderRequest(**common, limit_price=num(order.limit_price))
    if t == OrderType.STOP:
        return StopOrderRequest(**common, stop_price=num(order.stop_price))
    if t == OrderType.STOP_LIMIT:
        return StopLimitOrderRequest(**common, stop_price=num(order.stop_price), limit_price=num(order.limit_price))
    if t == OrderType.TRAILING_STOP:
        return TrailingStopOrderRequest(**common, trail_percent=num(order.trail_percent), trail_price=num(order.trail_amount))
    return MarketOrderRequest(**common)


class AlpacaBroker:
    """Trades one Alpaca account (paper by default).

    ``url_override`` points the client elsewhere (a local stub in tests); ``account`` names
    the account in :class:`BrokerAccount` (default: Alpaca's account number);
    ``cancel_wait`` is how long ``cancel`` waits for ``pending_cancel`` to become final.
    """

    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        paper: bool = True,
        url_override: str | None = None,
        account: str | None = None,
        cancel_wait: float = 2.0,
    ) -> None:
        if not api_key or not secret_key:
            raise BrokerError(
                "Alpaca broker needs TRADING_ALPACA_API_KEY and TRADING_ALPACA_SECRET_KEY",
                retryable=False,
            )
        self._client = TradingClient(api_key, secret_key, paper=paper, url_override=url_override)
        self._url = url_override or ("paper-api.alpaca.markets" if paper else "api.alpaca.markets")
        self._account_name = account
        self._cancel_wait = cancel_wait

    @classmethod
    def from_settings(cls, settings: Settings) -> AlpacaBroker:
        """Build from ``TRADING_ALPACA_*`` settings (keys, paper flag, trading URL override)."""
        s = settings
        return cls(
            s.alpaca_api_key or "",
            s.alpaca_secret_key or "",
            paper=s.alpaca_paper,
            url_override=s.alpaca_url_override,
        )

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Translate alpaca-py / transport failures into BrokerError with a retry hint."""
        try:
            yield
        except BrokerError:
            raise
        except APIError as exc:
            code = exc.status_code
            retryable = code is None or code >= 500 or code == 429
            hint = (
                " (check TRADING_ALPACA_API_KEY / TRADING_ALPACA_SECRET_KEY)" if code == 401 else ""
            )
            raise BrokerError(
                f"Alpaca {what} failed: HTTP {code}: {_api_message(exc)}{hint}", retryable=retryable
            ) from exc
        except (
            requests.exceptions.JSONDecodeError,
            pydantic.ValidationError,
            ValueError,
            KeyError,
            TypeError,
        ) as exc:
            raise BrokerError(
                f"Alpaca {what}: unreadable reply ({type(exc).__name__}: {str(exc)[:200]}); outcome unknown, "
                "retrying with the same client_order_id is safe",
                retryable=True,
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise BrokerError(
                f"Alpaca {what}: cannot reach {self._url} ({type(exc).__name__}); outcome unknown, retry "
                "(check network / TRADING_ALPACA_URL_OVERRIDE)",
                retryable=True,
            ) from exc

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        with self._call(what):
            return fn()

    # ------------------------------------------------------------------ lookups
    def _by_client_id(self, client_order_id: str) -> AlpacaOrder | None:
        try:
            return self._do(
                "order lookup", lambda: self._client.get_order_by_client_id(client_order_id)
            )
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, APIError) and cause.status_code == 404:
                return None
            raise

    def _chain(self, first: AlpacaOrder) -> list[AlpacaOrder]:
        """The order and its replacements, oldest first; the last one is live."""
        chain = [first]
        while chain[-1].replaced_by is not None and len(chain) < 100:
            nxt = chain[-1].replaced_by
            chain.append(
                self._do("order lookup", lambda nxt=nxt: self._client.get_order_by_id(nxt))
            )
        return chain

    def _chain_for(self, client_order_id: str) -> list[AlpacaOrder] | None:
        first = self._by_client_id(client_order_id)
        return None if first is None else self._chain(first)

    def _root(self, order: AlpacaOrder) -> list[AlpacaOrder]:
        """Walk ``replaces`` back to the order carrying our client_order_id; oldest first."""
        chain = [order]
        while chain[0].replaces is not None and len(chain) < 100:
            prev = chain[0].replaces
            chain.insert(
                0, self._do("order lookup", lambda prev=prev: self._client.get_order_by_id(prev))
            )
        return chain

    def _fill_activities(
        self, orders: Iterable[AlpacaOrder]
    ) -> dict[str, list[dict[str, Any]]] | None:
        """Fill activities of these Alpaca orders, or None when Alpaca will not list them."""
        orders = list(orders)
        order_ids = {str(o.id) for o in orders}
        found: dict[str, list[dict[str, Any]]] = {}
        # fills cannot predate the oldest order: do not page through the whole account history
        since = min(o.created_at for o in orders) - timedelta(minutes=1)
        params: dict[str, Any] = {
            "direction": "asc",
            "page_size": ACTIVITY_PAGE_SIZE,
            "after": since.astimezone(UTC).isoformat(),
        }
        try:
            while True:
                page = self._do(
                    "fill activities",
                    lambda: self._client.get("/account/activities/FILL", dict(params)),
                )
                if not isinstance(page, list):
                    return None
                for act in page:
                    if act.get("order_id") in order_ids:
                        found.setdefault(act["order_id"], []).append(act)
                if len(page) < ACTIVITY_PAGE_SIZE:
                    return found
                params["page_token"] = page[-1]["id"]
        except BrokerError as exc:
            if isinstance(exc.__cause__, APIError) and exc.__cause__.status_code in (403, 404, 422):
                return None
            raise

    def _to_broker(
        self, chain: list[AlpacaOrder], activities: dict[str, list[dict[str, Any]]] | None = None
    ) -> BrokerOrder:
        root, live = chain[0], chain[-1]
        filled = _dec(live.filled_qty)
        avg = _dec(live.filled_avg_price) if live.filled_avg_price is not None else None
        fills: list[BrokerFill] = []
        if any(_dec(o.filled_qty) > 0 for o in chain):
            acts = activities if activities is not None else self._fill_activities(chain)
            if acts is not None:
                for oid in (str(o.id) for o in chain):
                    for a in acts.get(oid, []):
                        fills.append(
                            BrokerFill(
                                fill_id=str(a["id"]),
                                client_order_id=root.client_order_id,
                                quantity=_dec(a["qty"]),
                                price=_dec(a["price"]),
                                commission=Decimal(0),
                                ts=_naive_utc(a["transaction_time"]),
                            )
                        )
            got = sum((f.quantity for f in fills), Decimal(0))
            filled = max(filled, got)
            if got < filled and avg is not None:
                # activities lag or are unavailable: one fill for the rest, priced so the average holds
                missing = filled - got
                price = (
                    avg * filled - sum((f.quantity * f.price for f in fills), Decimal(0))
                ) / missing
                fills.append(
                    BrokerFill(
                        fill_id=f"{live.id}:cum:{filled}",
                        client_order_id=root.client_order_id,
                        quantity=missing,
                        price=price,
                        commission=Decimal(0),
                        ts=_naive_utc(live.filled_at or live.updated_at),
                    )
                )
        status = _status(live)
        if status == OrderStatus.ACCEPTED and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        side = Side.BUY if live.side == AlpacaSide.BUY else Side.SELL
        reason = (
            f"Alpaca status {live.status.value}"
            if status in (OrderStatus.REJECTED, OrderStatus.EXPIRED)
            else None
        )
        return BrokerOrder(
            client_order_id=root.client_order_id,
            broker_order_id=str(live.id),
            symbol=live.symbol or "",
            side=side,
            quantity=_dec(live.qty),
            filled_quantity=filled,
            status=status,
            avg_fill_price=avg,
            reason=reason,
            fills=tuple(fills),
        )

    # ------------------------------------------------------------------ protocol
    def submit(self, order: OrderRequest) -> BrokerOrder:
        """Submit once; a duplicate client_order_id returns the order Alpaca already has."""
        if problem := order.problem():
            raise BrokerError(f"order {order.client_order_id}: {problem}", retryable=False)
        common: dict[str, Any] = {
            "symbol": order.symbol,
            "qty": float(order.quantity),
            "side": AlpacaSide.BUY if order.side == Side.BUY else AlpacaSide.SELL,
            "time_in_force": AlpacaTif(order.time_in_force.value),
            "client_order_id": order.client_order_id,
        }
        try:
            request = _alpaca_request(order, common)
        except (pydantic.ValidationError, ValueError) as exc:
            raise BrokerError(
                f"order {order.client_order_id} is not valid for Alpaca: {exc}", retryable=False
            ) from exc
        try:
            placed = self._do("submit", lambda: self._client.submit_order(request))
        except BrokerError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, APIError)
                and cause.status_code == 422
                and DUPLICATE_CLIENT_ORDER_ID in _api_message(cause)
            ):
                chain = self._chain_for(order.client_order_id)
                if chain is not None:
                    return self._to_broker(chain)
            raise
        return self._to_broker([placed])  # type: ignore[list-item]

    def order_status(self, client_order_id: str) -> BrokerOrder | None:
        chain = self._chain_for(client_order_id)
        return None if chain is None else self._to_broker(chain)

    def _live_chain(self, client_order_id: str, action: str) -> list[AlpacaOrder]:
        chain = self._chain_for(client_order_id)
        if chain is None:
            raise BrokerError(
                f"cannot {action} {client_order_id}: Alpaca has no such order", retryable=False
            )
        status = _status(chain[-1])
        if status.is_terminal:
            raise BrokerError(
                f"cannot {action} {client_order_id}: order is {status.value}", retryable=False
            )
        return chain

    def cancel(self, client_order_id: str) -> BrokerOrder:
        chain = self._live_chain(client_order_id, "cancel")
        live_id = chain[-1].id
        try:
            self._do("cancel", lambda: self._client.cancel_order_by_id(live_id))
        except BrokerError as exc:
            if not (isinstance(exc.__cause__, APIError) and exc.__cause__.status_code == 422):
                raise
            # raced with a fill or another cancel: report what it became
        deadline = time.monotonic() + self._cancel_wait
        while True:
            chain = self._chain_for(client_order_id) or chain
            result = self._to_broker(chain)
            if result.status.is_terminal or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if result.status != OrderStatus.CANCELLED and result.status.is_terminal:
            raise BrokerError(
                f"cannot cancel {client_order_id}: order is {result.status.value}", retryable=False
            )
        return result

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
        """Replace the live order; a retried modify that already happened returns the result."""
        refuse_stop_modify(self.name, stop_price, trail_percent, trail_amount)
        if quantity is None and limit_price is None:
            raise BrokerError("modify needs a quantity or a limit_price", retryable=False)
        if quantity is not None and quantity != quantity.to_integral_value():
            raise BrokerError(
                f"Alpaca replaces whole-share quantities only, got {quantity}", retryable=False
            )
        chain = self._live_chain(client_order_id, "modify")
        live = chain[-1]

        def done(c: list[AlpacaOrder]) -> bool:
            last = c[-1]
            return (quantity is None or _dec(last.qty) == quantity) and (
                limit_price is None or _dec(last.limit_price) == limit_price
            )

        if len(chain) > 1 and done(chain):
            return self._to_broker(chain)
        request = ReplaceOrderRequest(
            qty=int(quantity) if quantity is not None else None,
            limit_price=float(limit_price) if limit_price is not None else None,
        )
        try:
            new = self._do("modify", lambda: self._client.replace_order_by_id(live.id, request))
        except BrokerError as exc:
            if isinstance(exc.__cause__, APIError) and exc.__cause__.status_code == 422:
                again = self._chain_for(client_order_id)
                if again is not None and len(again) > len(chain) and done(again):
                    return self._to_broker(again)
            raise
        return self._to_broker([*chain, new])  # type: ignore[list-item]

    def open_orders(self) -> list[BrokerOrder]:
        listed = self._do(
            "list orders",
            lambda: self._client.get_orders(
                GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=False)
            ),
        )
        chains = [self._root(o) for o in listed]  # type: ignore[arg-type, union-attr]
        acts: dict[str, list[dict[str, Any]]] | None = {}
        if any(_dec(o.filled_qty) > 0 for c in chains for o in c):
            acts = self._fill_activities(o for c in chains for o in c)
        return [self._to_broker(c, acts) for c in chains]

    def positions(self) -> list[BrokerPosition]:
        raw = self._do("positions", self._client.get_all_positions)
        out = []
        for p in raw:  # type: ignore[union-attr]
            qty = _dec(p.qty)
            if getattr(p.side, "value", p.side) == "short" and qty > 0:
                qty = -qty
            out.append(
                BrokerPosition(symbol=p.symbol, quantity=qty, avg_price=_dec(p.avg_entry_price))
            )
        return out

    def account(self) -> BrokerAccount:
        acct = self._do("account", self._client.get_account)
        return BrokerAccount(
            account=self._account_name or acct.account_number,  # type: ignore[union-attr]
            cash=_dec(acct.cash),  # type: ignore[union-attr]
            equity=_dec(acct.equity),  # type: ignore[union-attr]
            buying_power=_dec(acct.buying_power),  # type: ignore[union-attr]
        )
