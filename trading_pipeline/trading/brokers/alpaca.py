"""Alpaca as a :class:`~trading_pipeline.trading.brokers.base.Broker`, through alpaca-py's ``TradingClient``.

Why it looks the way it does:

- **Our client_order_id is the key.** Alpaca enforces unique ``client_order_id``s, so a
  retried submit gets HTTP 422 "client_order_id must be unique"; we then fetch and return
  the existing order, which makes ``submit`` idempotent even when a reply was lost.
- **Replace makes a new order.** Alpaca's PATCH creates a new order (new id, new
  client_order_id) and marks the old one ``replaced``. We follow ``replaced_by`` from the
  order carrying our id to the live one, and walk ``replaces`` back from a listed order to
  our id, so callers keep seeing one order under their id. No local state: it survives a
  restart. A replace carries ``qty``, ``limit_price``, ``stop_price`` and ``trail`` (a
  trailing stop's trail, in the kind it has: percent or price); a bracket's exit is replaced
  as its own leg and keeps answering to ``<entry>-tp`` / ``<entry>-sl``.
- **Fills come from fill activities** (``/v2/account/activities/FILL``), which carry each
  execution; if they cannot be read, one aggregate fill is derived from
  ``filled_qty``/``filled_avg_price`` so fills always sum to the filled quantity.
- **Brackets are native** (``order_class: bracket``): one POST carries the entry with
  ``take_profit.limit_price`` and ``stop_loss.stop_price``; Alpaca answers with the entry and
  its two ``legs`` (own ids, Alpaca's client ids). Our exit ids ``<entry>-tp`` / ``<entry>-sl``
  are resolved through the entry: it is looked up by our client_order_id, its legs read nested
  (``GET /v2/orders/{id}?nested=true``), the limit leg is the take-profit, the stop leg the
  stop-loss. Alpaca gives the legs the entry's time_in_force (day or gtc only), holds them
  (``held``) until the entry fills, and cancels the other leg when one fills or is cancelled.
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
from alpaca.trading.enums import OrderClass, QueryOrderStatus
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.enums import TimeInForce as AlpacaTif
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from trading_pipeline.marketdata.bars import naive_utc
from trading_pipeline.trading.brokers.base import (
    BrokerAccount,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    ModifyNotSupported,
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
BRACKET_SUFFIXES = ("-tp", "-sl")  # our ids of a bracket's take-profit and stop-loss legs
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


def _is_duplicate_client_id(exc: BrokerError) -> bool:
    """Alpaca refused a submit because it already has an order with this client_order_id (a
    retried submit whose first attempt reached it)."""
    cause = exc.__cause__
    return isinstance(cause, APIError) and cause.status_code == 422 and DUPLICATE_CLIENT_ORDER_ID in _api_message(cause)


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


def _is_bracket(order: AlpacaOrder) -> bool:
    return getattr(order.order_class, "value", order.order_class) == OrderClass.BRACKET.value


def _leg_suffix(leg: AlpacaOrder) -> str | None:
    """Which of our exits a bracket leg is: the limit leg takes profit, the stop leg stops loss."""
    kind = leg.type or leg.order_type
    kind = getattr(kind, "value", kind)
    return "-tp" if kind == "limit" else "-sl" if kind in ("stop", "stop_limit") else None


def _pick_legs(legs: list[AlpacaOrder] | None, entry_id: str) -> dict[str, AlpacaOrder]:
    """The take-profit and stop-loss legs of a bracket, keyed by our id suffix; the original leg
    of each (a replacement is reached through ``replaced_by``)."""
    found: dict[str, AlpacaOrder] = {}
    for leg in sorted(legs or [], key=lambda o: o.replaces is not None):
        suffix = _leg_suffix(leg)
        if suffix is not None and suffix not in found:
            found[suffix] = leg
    if set(found) != set(BRACKET_SUFFIXES):
        kinds = sorted(str(getattr(o.type, "value", o.type)) for o in legs or [])
        raise BrokerError(
            f"Alpaca bracket {entry_id}: expected a take-profit limit leg and a stop-loss stop leg, "
            f"got {'no legs' if not legs else 'legs ' + ', '.join(kinds)}; the bracket may exist at Alpaca, "
            "a retry looks it up by client_order_id",
            retryable=True,
        )
    return found


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
    supports_brackets = True  # natively: see submit_bracket

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
        """The order under our id (a bracket leg for ``<entry>-tp`` / ``<entry>-sl``) and its
        replacements, oldest first; None if Alpaca has no such order."""
        leg = self._leg_for(client_order_id)
        if leg is not None:
            return self._leg_chain(leg)
        first = self._by_client_id(client_order_id)
        return None if first is None else self._chain(first)

    def _leg_chain(self, leg: AlpacaOrder) -> list[AlpacaOrder]:
        """A bracket leg's whole chain, oldest first: the entry may list the original leg or,
        once it was replaced, the replacement."""
        return self._root(leg)[:-1] + self._chain(leg)

    def _legs(self, parent: AlpacaOrder) -> dict[str, AlpacaOrder]:
        """A bracket's legs, read nested when the reply did not roll them up."""
        legs = parent.legs
        if not legs:
            full = self._do(
                "order lookup",
                lambda: self._client.get_order_by_id(parent.id, GetOrderByIdRequest(nested=True)),
            )
            legs = full.legs  # type: ignore[union-attr]
        return _pick_legs(legs, parent.client_order_id)

    def _leg_for(self, client_order_id: str) -> AlpacaOrder | None:
        """The bracket leg behind ``<entry>-tp`` / ``<entry>-sl``; None for any other id, or
        when the entry is not a bracket at Alpaca."""
        suffix = client_order_id[-3:]
        if suffix not in BRACKET_SUFFIXES:
            return None
        entry = self._by_client_id(client_order_id[:-3])
        if entry is None or not _is_bracket(entry):
            return None
        return self._legs(self._chain(entry)[-1])[suffix]

    def _bracket_of(self, entry_chain: list[AlpacaOrder]) -> tuple[BrokerOrder, BrokerOrder, BrokerOrder]:
        entry_id = entry_chain[0].client_order_id
        legs = self._legs(entry_chain[-1])
        return (
            self._to_broker(entry_chain),
            self._to_broker(self._leg_chain(legs["-tp"]), client_order_id=f"{entry_id}-tp"),
            self._to_broker(self._leg_chain(legs["-sl"]), client_order_id=f"{entry_id}-sl"),
        )

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
        self,
        chain: list[AlpacaOrder],
        activities: dict[str, list[dict[str, Any]]] | None = None,
        *,
        client_order_id: str | None = None,
    ) -> BrokerOrder:
        """Our view of an order chain, under ``client_order_id`` (default: the id the first
        order carries; a bracket leg carries Alpaca's, so its caller names ours)."""
        root, live = chain[0], chain[-1]
        our_id = client_order_id or root.client_order_id
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
                                client_order_id=our_id,
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
                        client_order_id=our_id,
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
            client_order_id=our_id,
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
            if _is_duplicate_client_id(exc):
                chain = self._chain_for(order.client_order_id)
                if chain is not None:
                    return self._to_broker(chain)
            raise
        return self._to_broker([placed])  # type: ignore[list-item]

    def submit_bracket(
        self, entry: OrderRequest, take_profit: OrderRequest, stop_loss: OrderRequest
    ) -> tuple[BrokerOrder, BrokerOrder, BrokerOrder]:
        """One ``order_class: bracket`` POST for the entry and both exits; a duplicate entry id
        returns the bracket Alpaca already has (see :class:`~.base.NativeBrackets`)."""
        coid = entry.client_order_id
        exit_side = Side.SELL if entry.side == Side.BUY else Side.BUY
        problem = entry.problem()
        if problem is None and OrderType(entry.order_type) not in (OrderType.MARKET, OrderType.LIMIT):
            problem = "Alpaca bracket entries are market or limit orders"
        if problem is None and entry.time_in_force.value not in ("day", "gtc"):
            problem = "Alpaca takes brackets with time_in_force day or gtc only"
        if problem is None and (
            OrderType(take_profit.order_type) != OrderType.LIMIT or take_profit.limit_price is None
            or OrderType(stop_loss.order_type) != OrderType.STOP or stop_loss.stop_price is None
        ):
            problem = "a bracket's take-profit is a limit order and its stop-loss a stop order"
        if problem is None and any(
            x.side != exit_side or x.quantity != entry.quantity or x.symbol != entry.symbol
            for x in (take_profit, stop_loss)
        ):
            problem = "a bracket's exits are on the other side, for the entry's symbol and quantity"
        if problem is None and (take_profit.client_order_id, stop_loss.client_order_id) != (
            f"{coid}-tp", f"{coid}-sl"
        ):
            problem = "a bracket's exits are named <entry>-tp and <entry>-sl"
        if problem:
            raise BrokerError(f"bracket {coid}: {problem}", retryable=False)
        common: dict[str, Any] = {
            "symbol": entry.symbol,
            "qty": float(entry.quantity),
            "side": AlpacaSide.BUY if entry.side == Side.BUY else AlpacaSide.SELL,
            "time_in_force": AlpacaTif(entry.time_in_force.value),
            "client_order_id": coid,
            "order_class": OrderClass.BRACKET,
            "take_profit": TakeProfitRequest(limit_price=float(take_profit.limit_price)),  # type: ignore[arg-type]
            "stop_loss": StopLossRequest(stop_price=float(stop_loss.stop_price)),  # type: ignore[arg-type]
        }
        try:
            request = _alpaca_request(entry, common)
        except (pydantic.ValidationError, ValueError) as exc:
            raise BrokerError(f"bracket {coid} is not valid for Alpaca: {exc}", retryable=False) from exc
        try:
            placed = self._do("bracket submit", lambda: self._client.submit_order(request))
        except BrokerError as exc:
            if _is_duplicate_client_id(exc):
                first = self._by_client_id(coid)
                if first is not None:
                    if not _is_bracket(first):
                        raise BrokerError(
                            f"Alpaca already has a plain (not bracket) order {coid}", retryable=False
                        ) from exc
                    return self._bracket_of(self._chain(first))
            raise
        if not placed.legs:  # type: ignore[union-attr]
            raise BrokerError(
                f"Alpaca accepted bracket {coid} but its reply lacks the take-profit and stop-loss legs; "
                "outcome unclear, a retry looks the bracket up by client_order_id",
                retryable=True,
            )
        return self._bracket_of([placed])  # type: ignore[list-item]

    def order_status(self, client_order_id: str) -> BrokerOrder | None:
        chain = self._chain_for(client_order_id)
        return None if chain is None else self._to_broker(chain, client_order_id=client_order_id)

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
            result = self._to_broker(chain, client_order_id=client_order_id)
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
        """Replace the live order (``PATCH /v2/orders/{id}``: ``qty``, ``limit_price``,
        ``stop_price``, ``trail``); a retried modify that already happened returns the result.

        A trailing stop's ``trail`` replaces the trail it has (``trail_percent`` or
        ``trail_price``, our ``trail_amount``): switching between the two is not something Alpaca
        can replace, so it raises :class:`ModifyNotSupported` before anything is sent. A bracket's
        exit is replaced through its own leg (``<entry>-sl`` / ``<entry>-tp``)."""
        if trail_percent is not None and trail_amount is not None:
            raise BrokerError("modify takes one of trail_percent and trail_amount", retryable=False)
        trail = trail_percent if trail_percent is not None else trail_amount
        if quantity is None and limit_price is None and stop_price is None and trail is None:
            raise BrokerError(
                "modify needs a quantity, limit_price, stop_price or trail", retryable=False
            )
        if quantity is not None and quantity != quantity.to_integral_value():
            raise BrokerError(
                f"Alpaca replaces whole-share quantities only, got {quantity}", retryable=False
            )
        chain = self._live_chain(client_order_id, "modify")
        live = chain[-1]
        kind = str(getattr(live.type or live.order_type, "value", live.type or live.order_type))
        if limit_price is not None and kind not in ("limit", "stop_limit"):
            raise BrokerError(f"cannot modify {client_order_id}: a {kind} order has no limit price", retryable=False)
        if stop_price is not None and kind not in ("stop", "stop_limit"):
            raise BrokerError(f"cannot modify {client_order_id}: a {kind} order has no stop price", retryable=False)
        if trail is not None:
            if kind != "trailing_stop":
                raise BrokerError(f"cannot modify {client_order_id}: a {kind} order has no trail", retryable=False)
            has_percent = live.trail_percent is not None
            if has_percent != (trail_percent is not None):
                have, want = ("trail_percent", "trail_amount") if has_percent else ("trail_amount", "trail_percent")
                raise ModifyNotSupported(
                    f"cannot modify {client_order_id}: Alpaca replaces a trailing stop's trail in the kind it "
                    f"has ({have}); switching to {want} is not possible, cancel and place a new order"
                )
        trail_field = "trail_percent" if trail_percent is not None else "trail_price"

        def done(c: list[AlpacaOrder]) -> bool:
            last = c[-1]
            return (
                (quantity is None or _dec(last.qty) == quantity)
                and (limit_price is None or _dec(last.limit_price) == limit_price)
                and (stop_price is None or _dec(last.stop_price) == stop_price)
                and (trail is None or _dec(getattr(last, trail_field)) == trail)
            )

        if len(chain) > 1 and done(chain):
            return self._to_broker(chain, client_order_id=client_order_id)

        def num(x: Decimal | None) -> float | None:
            return None if x is None else float(x)

        request = ReplaceOrderRequest(
            qty=int(quantity) if quantity is not None else None,
            limit_price=num(limit_price),
            stop_price=num(stop_price),
            trail=num(trail),
        )
        try:
            new = self._do("modify", lambda: self._client.replace_order_by_id(live.id, request))
        except BrokerError as exc:
            if isinstance(exc.__cause__, APIError) and exc.__cause__.status_code == 422:
                again = self._chain_for(client_order_id)
                if again is not None and len(again) > len(chain) and done(again):
                    return self._to_broker(again, client_order_id=client_order_id)
            raise
        return self._to_broker([*chain, new], client_order_id=client_order_id)  # type: ignore[list-item]

    def open_orders(self) -> list[BrokerOrder]:
        """Working orders; a bracket's working legs under our ``<entry>-tp`` / ``<entry>-sl``
        (listed nested: Alpaca rolls the legs up under their entry)."""
        listed = self._do(
            "list orders",
            lambda: self._client.get_orders(
                GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=True)
            ),
        )
        chains: list[tuple[list[AlpacaOrder], str | None]] = []
        for o in listed:  # type: ignore[union-attr]
            chain = self._root(o)  # type: ignore[arg-type]
            if not (_is_bracket(o) and o.legs):  # type: ignore[union-attr]
                chains.append((chain, None))
                continue
            entry_id = chain[0].client_order_id
            if not _status(o).is_terminal:  # type: ignore[arg-type]
                chains.append((chain, None))
            for suffix, leg in _pick_legs(o.legs, entry_id).items():  # type: ignore[union-attr]
                leg_chain = self._leg_chain(leg)
                if not _status(leg_chain[-1]).is_terminal:
                    chains.append((leg_chain, f"{entry_id}{suffix}"))
        acts: dict[str, list[dict[str, Any]]] | None = {}
        if any(_dec(o.filled_qty) > 0 for c, _ in chains for o in c):
            acts = self._fill_activities(o for c, _ in chains for o in c)
        return [self._to_broker(c, acts, client_order_id=coid) for c, coid in chains]

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
