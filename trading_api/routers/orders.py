"""Orders: list, submit (through the same risk engine and ops store as signal orders), cancel."""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse

from trading_api.deps import ApiKeyRecord, State, Store, require_scope
from trading_api.routers._params import field_error
from trading_api.schemas import (
    FORBIDDEN,
    READ_RESPONSES,
    ErrorDetail,
    Order,
    OrderCreate,
    OrderList,
    OrderModify,
    OrderRejectedResponse,
    OrderResult,
    RiskRejectionResponse,
    order_model,
)
from trading_pipeline import logs
from trading_pipeline.trading.model import OrderStatus

router = APIRouter(tags=["orders"], responses=READ_RESPONSES, dependencies=[Depends(require_scope("read"))])
log = logs.get_logger(__name__)

_COID = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$"
StatusFilter = Literal["open", "new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "denied", "expired"]


# OpenAPI links: the order a POST answers with can be read and cancelled by its id.
_ORDER_LINKS = {
    "GetOrder": {
        "operationRef": "#/paths/~1orders~1{client_order_id}/get",
        "parameters": {"client_order_id": "$response.body#/order/client_order_id"},
    },
    "CancelOrder": {
        "operationRef": "#/paths/~1orders~1{client_order_id}/delete",
        "parameters": {"client_order_id": "$response.body#/order/client_order_id"},
    },
}


def idempotent_order_id(api_key_id: int, account: str, key: str) -> str:
    """The client order id an Idempotency-Key maps to: a retry finds the first order.

    Scoped to the API key and the account, so two clients cannot collide on a key."""
    digest = hashlib.sha256(f"api|{api_key_id}|{account}|{key}".encode()).digest()
    return "api-" + base64.b32encode(digest).decode().lower()[:20]


@router.get("/orders", response_model=OrderList, summary="Orders in the ops store, newest first")
def list_orders(
    _key: ApiKeyRecord,
    store: Store,
    account: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    status_: Annotated[
        list[StatusFilter] | None,
        Query(alias="status", description="Repeatable; `open` means new, accepted or partially_filled."),
    ] = None,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-/=^]{1,32}$")] = None,
    strategy: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OrderList:
    statuses: list[str] | None = None
    if status_:
        statuses = []
        for s in status_:
            statuses += ["new", "accepted", "partially_filled"] if s == "open" else [s]
    rows = store.list_orders(account=account, status=statuses, symbol=symbol.upper() if symbol else None, strategy=strategy, limit=limit)
    kids = store.children_of([o.client_order_id for o in rows])
    return OrderList(count=len(rows), items=[order_model(o, kids.get(o.client_order_id)) for o in rows])


@router.get("/orders/{client_order_id}", response_model=Order, responses={404: {"model": ErrorDetail}}, summary="One order")
def get_order(_key: ApiKeyRecord, store: Store, client_order_id: Annotated[str, Path(pattern=_COID)]) -> Order:
    o = store.get_order(client_order_id)
    if o is None:
        raise HTTPException(404, f"no order {client_order_id!r}")
    return order_model(o, store.children_of([client_order_id]).get(client_order_id))


def _field_at_fault(problem: str) -> str:
    """The body field an order problem (``model.order_problem``) names first."""
    named = [(problem.find(f), f) for f in ("limit_price", "stop_price", "trail_percent", "trail_amount") if f in problem]
    if named:
        return min(named)[1]
    return "time_in_force" if "time in force" in problem else "order_type"


async def _json_body(request: Request) -> None:
    """415 for a body not sent as JSON: FastAPI leaves it unparsed, and the 422 that follows
    ("Input should be a valid dictionary") would not say why."""
    ctype = request.headers.get("content-type", "")
    main_type, _, sub_type = ctype.split(";")[0].strip().lower().partition("/")
    if (main_type == "application" and (sub_type == "json" or sub_type.endswith("+json"))) or not await request.body():
        return
    raise HTTPException(415, f"send the order as JSON (Content-Type: application/json), not {ctype or 'no Content-Type'}")


def _rejection(request: Request, coid: str, order: Any, reason: str, code: int = 422) -> JSONResponse:
    rule, _, text = reason.partition(": ")
    if order is not None and order.status == OrderStatus.REJECTED and order.reason:
        rule, text = "broker", order.reason  # the broker refused (e.g. unknown symbol); risk denials are DENIED
    body = RiskRejectionResponse(
        detail={"rule": rule or "unknown", "reason": text or reason, "client_order_id": coid},
        request_id=getattr(request.state, "request_id", None),
    )
    return JSONResponse(status_code=code, content=body.model_dump(mode="json"))


@router.post(
    "/orders",
    dependencies=[Depends(require_scope("trade"))],
    response_model=OrderResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        **FORBIDDEN,
        201: {"links": _ORDER_LINKS},
        200: {
            "model": OrderResult,
            "description": "Idempotent replay: the order this Idempotency-Key already created.",
            "links": _ORDER_LINKS,
        },
        400: {"model": ErrorDetail, "description": "The body could not be read as text (e.g. not UTF-8)."},
        409: {"model": ErrorDetail, "description": "Idempotency-Key reused with a different order, or a bracket "
              "this broker does not support yet."},
        415: {"model": ErrorDetail, "description": "The body is not sent as JSON."},
        422: {
            "model": OrderRejectedResponse,
            "description": "Rejected by a risk rule (or the broker): `detail` has the rule and reason. "
            "Or a malformed request: `detail` lists the field errors.",
        },
        502: {"model": ErrorDetail, "description": "Broker error; the order is recorded and a retry resumes it."},
        503: {"model": ErrorDetail, "description": "The ops store or the risk limits file is unavailable."},
    },
    summary="Submit a manual order through the risk engine",
)
def create_order(
    request: Request,
    _key: ApiKeyRecord,
    _json: Annotated[None, Depends(_json_body)],
    state: State,
    store: Store,
    body: OrderCreate,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9._:\-]{1,128}$", description="Retry-safe: the same key returns the same order."),
    ] = None,
) -> Any:
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.brokers.base import BracketNotSupported, BrokerError
    from trading_pipeline.trading.execution import InvalidBracket
    from trading_pipeline.trading.model import InvalidOrder, order_problem
    from trading_pipeline.trading.orders import client_order_id, utcnow
    from trading_pipeline.trading.services import place_order, risk_engine

    symbol = body.symbol.upper()
    problem = order_problem(
        body.order_type, body.side, limit_price=body.limit_price, stop_price=body.stop_price,
        trail_percent=body.trail_percent, trail_amount=body.trail_amount, time_in_force=body.time_in_force,
    )
    if problem:  # contradictory terms: a 422 on the field at fault, nothing stored
        raise field_error(("body", _field_at_fault(problem)), problem)
    if idempotency_key:
        coid = idempotent_order_id(_key["id"], body.account, idempotency_key)
    else:
        coid = client_order_id("manual", body.account, symbol, utcnow(), body.side)
    existing = store.get_order(coid)
    if existing is not None and idempotency_key:
        same = (
            existing.symbol == symbol
            and existing.side.value == body.side
            and existing.quantity == body.quantity
            and existing.order_type.value == body.order_type
            and existing.limit_price == body.limit_price
            and existing.stop_price == body.stop_price
            and existing.trail_percent == body.trail_percent
            and existing.trail_amount == body.trail_amount
            and existing.time_in_force.value == body.time_in_force
        )
        if not same:
            raise HTTPException(409, f"Idempotency-Key already used for a different order ({coid})")
    try:
        engine, broker = risk_engine(state.settings, store, body.account), state.broker(body.account)
    except UnknownAccount as exc:  # the accounts file does not name it: nothing stored
        raise field_error(("body", "account"), str(exc.args[0])) from exc
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"risk limits or accounts unavailable: {exc}") from exc
    try:
        placed = place_order(
            store=store, broker=broker, feed=state.feed(), risk_engine=engine,
            account=body.account, symbol=symbol, side=body.side, quantity=body.quantity,
            limit_price=body.limit_price, time_in_force=body.time_in_force, order_id=coid,
            order_type=body.order_type, stop_price=body.stop_price,
            trail_percent=body.trail_percent, trail_amount=body.trail_amount,
            take_profit_price=body.bracket.take_profit_price if body.bracket else None,
            stop_loss_price=body.bracket.stop_loss_price if body.bracket else None,
        )
    except InvalidBracket as exc:  # the bracket does not fit its entry: nothing stored
        loc = ("body", exc.field) if exc.field == "order_type" else ("body", "bracket", exc.field)
        raise field_error(loc, str(exc)) from exc
    except BracketNotSupported as exc:
        raise HTTPException(409, str(exc)) from exc
    except InvalidOrder as exc:  # against the market (a buy stop at or below the last price): nothing stored
        raise field_error(("body", _field_at_fault(str(exc))), str(exc)) from exc
    except BrokerError as exc:
        raise HTTPException(502, f"broker error: {exc}") from exc
    result, order = placed.result, placed.order
    log.info("api_order", client_order_id=coid, action=result.action, status=result.status, reason=result.reason)
    if result.action in ("denied", "rejected"):
        return _rejection(request, coid, order, result.reason)
    if result.action == "error":
        raise HTTPException(502, f"broker error, order {coid} recorded: {result.reason}")
    replay = result.action == "skipped"
    if replay and order is not None and order.status.value in ("denied", "rejected"):
        return _rejection(request, coid, order, (order.reason or "").removeprefix("risk rule "))
    if replay:
        response.status_code = status.HTTP_200_OK
    children = [order_model(c) for c in placed.children]
    return OrderResult(action=result.action, reason=result.reason, idempotent_replay=replay,
                       order=order_model(order, [c.client_order_id for c in placed.children]) if order else None,
                       children=children)


@router.delete(
    "/orders/{client_order_id}",
    dependencies=[Depends(require_scope("trade"))],
    response_model=Order,
    responses={**FORBIDDEN, 404: {"model": ErrorDetail}, 409: {"model": ErrorDetail}, 502: {"model": ErrorDetail}},
    summary="Cancel a working order",
)
def cancel(_key: ApiKeyRecord, state: State, store: Store, client_order_id: Annotated[str, Path(pattern=_COID)]) -> Order:
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.brokers.base import BrokerError
    from trading_pipeline.trading.execution import cancel_order
    from trading_pipeline.trading.orders import IllegalTransition

    existing = store.get_order(client_order_id)
    if existing is None:
        raise HTTPException(404, f"no order {client_order_id!r}")
    try:
        order = cancel_order(client_order_id, broker=state.broker(existing.account), store=store)
    except UnknownAccount as exc:  # its account left the accounts file: which broker to ask is unknown
        raise HTTPException(409, f"{exc.args[0]}: put the account back in the accounts file to cancel its orders") from exc
    except IllegalTransition as exc:
        raise HTTPException(409, str(exc)) from exc
    except BrokerError as exc:
        raise HTTPException(502, f"broker error: {exc}") from exc
    return order_model(order)


@router.patch(
    "/orders/{client_order_id}",
    dependencies=[Depends(require_scope("trade"))],
    response_model=Order,
    responses={
        **FORBIDDEN,
        400: {"model": ErrorDetail, "description": "The body could not be read as text (e.g. not UTF-8)."},
        404: {"model": ErrorDetail, "description": "No such order."},
        409: {"model": ErrorDetail, "description": "The order is not working (filled, cancelled, rejected, denied, "
              "expired, a cancel pending), the new quantity is not above the filled part, or the broker cannot "
              "replace these terms."},
        415: {"model": ErrorDetail, "description": "The body is not sent as JSON."},
        422: {
            "model": OrderRejectedResponse,
            "description": "Refused by a risk rule on the modified order: `detail` has the rule and reason (the order "
            "is unchanged). Or contradictory or missing terms: `detail` lists the field errors.",
        },
        502: {"model": ErrorDetail, "description": "Broker error; the order is unchanged."},
        503: {"model": ErrorDetail, "description": "The ops store or the risk limits file is unavailable."},
    },
    summary="Modify a working order's quantity, limit, stop or trail",
)
def modify(
    request: Request,
    _key: ApiKeyRecord,
    _json: Annotated[None, Depends(_json_body)],
    state: State,
    store: Store,
    body: OrderModify,
    client_order_id: Annotated[str, Path(pattern=_COID)],
) -> Any:
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.brokers.base import BrokerError
    from trading_pipeline.trading.execution import UnknownOrder
    from trading_pipeline.trading.model import InvalidOrder
    from trading_pipeline.trading.orders import IllegalTransition
    from trading_pipeline.trading.services import modify_working_order, risk_engine

    terms = body.model_dump(exclude_none=True)
    if not terms:
        raise field_error(("body",), "give at least one of quantity, limit_price, stop_price, trail_percent, trail_amount")
    if "trail_percent" in terms and "trail_amount" in terms:
        raise field_error(("body", "trail_percent"), "give trail_percent or trail_amount, not both")
    existing = store.get_order(client_order_id)
    if existing is None:
        raise HTTPException(404, f"no order {client_order_id!r}")
    try:
        engine = risk_engine(state.settings, store, existing.account)
    except UnknownAccount as exc:
        raise HTTPException(409, f"{exc.args[0]}: its orders can be cancelled, not modified") from exc
    except (OSError, ValueError) as exc:
        raise HTTPException(503, f"risk limits or accounts unavailable: {exc}") from exc
    try:
        result = modify_working_order(store=store, broker_for=state.broker, feed=state.feed(), risk_engine=engine,
                                      client_order_id=client_order_id, **terms)
    except UnknownOrder as exc:
        raise HTTPException(404, str(exc)) from exc
    except IllegalTransition as exc:
        raise HTTPException(409, str(exc)) from exc
    except InvalidOrder as exc:
        raise field_error(("body", _field_at_fault(str(exc)) if "nothing to modify" not in str(exc) else "quantity"), str(exc)) from exc
    except BrokerError as exc:  # ModifyNotSupported, or the broker finds it no longer working
        raise HTTPException(502 if exc.retryable else 409, f"broker: {exc}") from exc
    log.info("api_order_modify", client_order_id=client_order_id, action=result.action, reason=result.reason)
    if result.action == "denied":
        return _rejection(request, client_order_id, None, result.reason)
    return order_model(result.order)
