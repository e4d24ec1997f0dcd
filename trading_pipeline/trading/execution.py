"""The order pipeline, without Dagster: signals -> decisions (trading/decisions.py) -> risk -> ops store -> broker.

The order of steps is what makes a retried job safe (docs/decisions.md #6):

1. the client order id is computed from (strategy, account, symbol, signal bar, side), so a
   re-run of the same signals computes the same ids;
2. an id already in the ops store is not submitted again; one stuck at NEW (we recorded it,
   then the broker call failed or the process died) is looked up at the broker by id
   first and only resubmitted if the broker has never seen it;
3. the order is recorded as NEW *before* the broker is called, so a crash mid-call leaves
   a record to resume from, never an order the store does not know about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import polars as pl

from trading_pipeline import logs
from trading_pipeline.trading.brokers.base import Broker, BrokerError
from trading_pipeline.trading.decisions import DecisionRules, Signal, Skip, decide, signal_side
from trading_pipeline.trading.model import (
    InvalidOrder,
    OrderRequest,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from trading_pipeline.trading.orders import OPEN_STATUSES, Order, client_order_id, utcnow
from trading_pipeline.trading.risk import CommissionEstimate, RiskContext, RiskEngine
from trading_pipeline.trading.sizing import Sizing
from trading_pipeline.trading.store import OpsStore

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class ExecutionResult:
    """What happened to one signal (or one manual order)."""

    symbol: str
    client_order_id: str | None
    action: str  # submitted | resumed | skipped | denied (risk) | rejected (broker) | error
    status: OrderStatus | None
    reason: str
    signal_ts: datetime | None = None


@dataclass(frozen=True)
class Mismatch:
    """One disagreement between the ops store and the broker."""

    kind: str  # position | order_missing_at_broker | order_unknown_to_store | order_status
    key: str
    store: str | None
    broker: str | None
    detail: str


def commission_estimate(broker: object) -> CommissionEstimate | None:
    """The broker's commission schedule when it states one (the paper broker's
    ``commission(quantity)``); live brokers report commission only on fills, so None."""
    fn = getattr(broker, "commission", None)
    return fn if callable(fn) else None


def _submit_recorded(order: Order, *, broker: Broker, store: OpsStore, risk_engine: RiskEngine) -> ExecutionResult:
    """Send an order that is in the store at NEW; the broker is asked by id first."""
    coid = order.client_order_id
    try:
        known = broker.order_status(coid)
    except BrokerError as exc:
        store.note(coid, f"broker lookup failed, will retry: {exc}")
        return ExecutionResult(order.symbol, coid, "error", OrderStatus.NEW, str(exc), order.signal_ts)
    if known is not None:
        synced = store.sync_from_broker(coid, known, broker.name)
        return ExecutionResult(order.symbol, coid, "resumed", synced.status, "found at broker; store synced", order.signal_ts)
    if halted := risk_engine.halted():
        reason = f"{halted}; not sending recorded order"
        store.note(coid, reason)
        return ExecutionResult(order.symbol, coid, "denied", OrderStatus.NEW, reason, order.signal_ts)
    try:
        bo = broker.submit(order.to_request())
    except BrokerError as exc:
        if exc.retryable:
            store.note(coid, f"broker error, outcome unknown; a re-run checks the broker and resubmits: {exc}")
            status = OrderStatus.NEW
        else:
            status = store.transition(coid, OrderStatus.REJECTED, f"broker refused: {exc}").status
        log.warning("broker_error", client_order_id=coid, retryable=exc.retryable, error=exc)
        return ExecutionResult(order.symbol, coid, "error", status, str(exc), order.signal_ts)
    synced = store.sync_from_broker(coid, bo, broker.name)
    action = "rejected" if synced.status == OrderStatus.REJECTED else "submitted"
    return ExecutionResult(order.symbol, coid, action, synced.status, synced.reason or f"sent to {broker.name}", order.signal_ts)


def submit_order(
    request: OrderRequest,
    *,
    broker: Broker,
    store: OpsStore,
    risk_engine: RiskEngine,
    prices: Mapping[str, Decimal],
    strategy: str = "manual",
    signal_ts: datetime | None = None,
    now: datetime | None = None,
) -> ExecutionResult:
    """One order through risk, the store and the broker: used by signals, the CLI and the API.

    ``prices`` maps symbol -> last close; it should cover the order's symbol and every symbol
    the account holds or has working orders in (``store.symbols_in_play(account)``), so that
    equity, exposure and buying power value them at market rather than at cost.

    Raises :class:`~trading_pipeline.trading.model.InvalidOrder` for a new order whose terms
    contradict each other or the market (a buy stop at or below the last close, say).
    """
    coid = request.client_order_id
    existing = store.get_order(coid)
    if existing is None and (problem := request.problem(prices.get(request.symbol))):
        raise InvalidOrder(problem)  # contradictory terms: refused before risk, nothing stored
    if existing is not None:
        if existing.status == OrderStatus.NEW:
            return _submit_recorded(existing, broker=broker, store=store, risk_engine=risk_engine)
        return ExecutionResult(request.symbol, coid, "skipped", existing.status, f"already in the ops store as {existing.status}", signal_ts)
    if not store.has_account(request.account):
        store.ensure_account(request.account, broker.account().cash)
    now = now or utcnow()
    ctx = RiskContext.from_store(store, request.account, prices, now, commission=commission_estimate(broker))
    decision = risk_engine.check(request, ctx)
    order = Order.from_request(request, strategy=strategy, signal_ts=signal_ts, broker=broker.name, now=now)
    if not decision.approved:
        if store.insert_order(order, reason="created; risk check failed"):
            store.transition(coid, OrderStatus.DENIED, f"risk rule {decision.rule}: {decision.reason}")
        return ExecutionResult(request.symbol, coid, "denied", OrderStatus.DENIED, f"{decision.rule}: {decision.reason}", signal_ts)
    if not store.insert_order(order, reason=f"risk approved; submitting to {broker.name}"):
        return ExecutionResult(request.symbol, coid, "skipped", None, "recorded concurrently by another process", signal_ts)
    return _submit_recorded(order, broker=broker, store=store, risk_engine=risk_engine)


def execute_signals(
    signals: pl.DataFrame,
    *,
    account: str,
    strategy: str,
    broker: Broker,
    store: OpsStore,
    risk_engine: RiskEngine,
    sizing: Sizing,
    prices: Mapping[str, Decimal],
    rules: DecisionRules | None = None,
    now: datetime | None = None,
) -> list[ExecutionResult]:
    """Turn signals into orders, once each. Safe to call again with the same signals.

    ``signals`` needs symbol, timeframe, ts, kind, direction, score (an ``atr_14`` or ``atr``
    column feeds ATR sizing). ``prices`` maps symbol -> last bar close. Which orders the
    signals ask for is :func:`~trading_pipeline.trading.decisions.decide`'s answer (the same
    function the backtest uses); ``rules`` default to one position per symbol, exits on
    opposite signals, no shorts. One result per signal, in (ts, symbol, kind) order.
    """
    missing = {"symbol", "timeframe", "ts", "kind", "direction", "score"} - set(signals.columns)
    if missing:
        raise ValueError(f"signals frame lacks columns: {', '.join(sorted(missing))}")
    rules = rules or DecisionRules()
    if not store.has_account(account):
        store.ensure_account(account, broker.account().cash)
    results: list[ExecutionResult | None] = []
    fresh: list[tuple[int, Signal]] = []
    for row in signals.sort(["ts", "symbol", "kind"], maintain_order=True).iter_rows(named=True):
        sig = Signal.from_row(row)
        try:
            side = signal_side(sig.direction)
        except ValueError:
            fresh.append((len(results), sig))  # decide() says why it makes no order
            results.append(None)
            continue
        coid = client_order_id(strategy, account, sig.symbol, sig.ts, side)
        existing = store.get_order(coid)
        if existing is None:
            fresh.append((len(results), sig))
            results.append(None)
        elif existing.status == OrderStatus.NEW:
            results.append(_submit_recorded(existing, broker=broker, store=store, risk_engine=risk_engine))
        else:
            results.append(ExecutionResult(sig.symbol, coid, "skipped", existing.status, f"already in the ops store as {existing.status}", sig.ts))
    pf = store.portfolio(account)
    working = {o.symbol for o in store.list_orders(account=account, status=list(OPEN_STATUSES))}
    decisions = decide(
        [sig for _, sig in fresh], positions={p.symbol: p.quantity for p in pf.open_positions()},
        working=working, prices=prices, equity=pf.equity(prices), sizing=sizing, rules=rules,
    )
    for (at, sig), d in zip(fresh, decisions, strict=True):
        coid = client_order_id(strategy, account, sig.symbol, sig.ts, d.side) if d.side else None
        if isinstance(d, Skip):
            action = "skipped"
            if d.rule == "no_price":
                action = "denied"
                store.record_risk_event(rule="price_collar", reason=d.reason, client_order_id=coid, account=account,
                                        symbol=sig.symbol, side=d.side.value if d.side else None)
            results[at] = ExecutionResult(sig.symbol, coid, action, None, d.reason, sig.ts)
            continue
        assert coid is not None
        request = OrderRequest(coid, account, sig.symbol, d.side, d.quantity, OrderType.MARKET, None, TimeInForce.DAY)
        result = submit_order(
            request, broker=broker, store=store, risk_engine=risk_engine, prices=prices,
            strategy=strategy, signal_ts=sig.ts, now=now,
        )
        log.info("signal_order", symbol=sig.symbol, client_order_id=coid, purpose=d.purpose,
                 action=result.action, status=result.status, reason=result.reason)
        results[at] = result
    return [r for r in results if r is not None]


def cancel_order(client_order_id: str, *, broker: Broker, store: OpsStore) -> Order:
    """Ask the broker to cancel; the store records the request and the broker's answer."""
    order = store.update_order(client_order_id, lambda o, _c: [o.request_cancel()])
    known = broker.order_status(client_order_id)
    if known is None:
        if order.status == OrderStatus.NEW:
            return store.transition(client_order_id, OrderStatus.CANCELLED, "cancelled before reaching the broker")
        raise BrokerError(f"broker {broker.name} does not know order {client_order_id}")
    return store.sync_from_broker(client_order_id, broker.cancel(client_order_id), broker.name)


def sync_open_orders(store: OpsStore, broker: Broker, account: str | None = None) -> list[Order]:
    """Pull fills and status changes for every open order from the broker into the store."""
    changed = []
    for order in store.list_orders(account=account, status=[OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED]):
        bo = broker.order_status(order.client_order_id)
        if bo is None:
            continue
        after = store.sync_from_broker(order.client_order_id, bo, broker.name)
        if after.status != order.status or after.filled_quantity != order.filled_quantity:
            changed.append(after)
    return changed


def reconcile(store: OpsStore, broker: Broker, account: str | None = None) -> list[Mismatch]:
    """Where the broker and the ops store disagree; empty means they agree."""
    account = account or broker.account().account
    out: list[Mismatch] = []
    ours = {p.symbol: p.quantity for p in store.portfolio(account).open_positions()}
    theirs = {p.symbol: p.quantity for p in broker.positions() if p.quantity != 0}
    for sym in sorted(set(ours) | set(theirs)):
        a, b = ours.get(sym, Decimal(0)), theirs.get(sym, Decimal(0))
        if a != b:
            out.append(Mismatch("position", sym, str(a), str(b), f"{sym}: store holds {a}, broker holds {b}"))
    store_open = {o.client_order_id: o for o in store.list_orders(account=account, status=[OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED])}
    broker_open = {o.client_order_id: o for o in broker.open_orders()}
    for coid in sorted(set(broker_open) - set(store_open)):
        known = store.get_order(coid)
        out.append(
            Mismatch(
                "order_unknown_to_store" if known is None else "order_status",
                coid,
                None if known is None else known.status.value,
                broker_open[coid].status.value,
                f"broker has {coid} working; store {'has no such order' if known is None else 'says ' + known.status}",
            )
        )
    for coid, o in sorted(store_open.items()):
        if coid in broker_open:
            if broker_open[coid].status != o.status:
                out.append(Mismatch("order_status", coid, o.status.value, broker_open[coid].status.value, f"{coid}: store {o.status}, broker {broker_open[coid].status}"))
            continue
        bo = broker.order_status(coid)
        if bo is None:
            out.append(Mismatch("order_missing_at_broker", coid, o.status.value, None, f"{coid} is {o.status} in the store but unknown to {broker.name}"))
        elif bo.status != o.status:
            out.append(Mismatch("order_status", coid, o.status.value, bo.status.value, f"{coid}: store {o.status}, broker {bo.status}"))
    return out
