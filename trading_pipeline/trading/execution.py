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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import polars as pl
from sqlalchemy.engine import Connection

from trading_pipeline import logs
from trading_pipeline.trading.brokers.base import Broker, BrokerError, NativeBrackets
from trading_pipeline.trading.decisions import (
    DecisionRules,
    Intent,
    Signal,
    Skip,
    decide,
    signal_side,
)
from trading_pipeline.trading.model import (
    InvalidOrder,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    bracket_problem,
    order_problem,
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
    action: str  # submitted | resumed | skipped | skipped_stale | denied (risk) | rejected (broker) | error
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


def _resume_or_halt(order: Order, what: str, *, broker: Broker, store: OpsStore, risk_engine: RiskEngine,
                    on_found: Callable[[], None] | None = None) -> ExecutionResult | None:
    """Before sending ``order`` (recorded at NEW): ask the broker for it by id (a failed lookup is
    an error to retry; found: sync the store, then ``on_found``, and resume), then the kill
    switch. None: send it. ``what`` names it in the halt reason ("order", "bracket")."""
    coid = order.client_order_id
    try:
        known = broker.order_status(coid)
    except BrokerError as exc:
        store.note(coid, f"broker lookup failed, will retry: {exc}")
        return ExecutionResult(order.symbol, coid, "error", OrderStatus.NEW, str(exc), order.signal_ts)
    if known is not None:
        synced = store.sync_from_broker(coid, known, broker.name)
        if on_found is not None:
            on_found()
        return ExecutionResult(order.symbol, coid, "resumed", synced.status, "found at broker; store synced", order.signal_ts)
    if halted := risk_engine.halted():
        reason = f"{halted}; not sending recorded {what}"
        store.note(coid, reason)
        return ExecutionResult(order.symbol, coid, "denied", OrderStatus.NEW, reason, order.signal_ts)
    return None


def _submit_recorded(order: Order, *, broker: Broker, store: OpsStore, risk_engine: RiskEngine) -> ExecutionResult:
    """Send an order that is in the store at NEW; the broker is asked by id first."""
    coid = order.client_order_id
    if (done := _resume_or_halt(order, "order", broker=broker, store=store, risk_engine=risk_engine)) is not None:
        return done
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
    timeframe: str | None = None,
) -> ExecutionResult:
    """One order through risk, the store and the broker: used by signals, the CLI and the API.

    ``prices`` maps symbol -> last close; it should cover the order's symbol and every symbol
    the account holds or has working orders in (``store.symbols_in_play(account)``), so that
    equity, exposure and buying power value them at market rather than at cost. ``timeframe``:
    the bar size of the signal a scan order comes from (None for a manual order): only the
    order runs of that bar size advance it.

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
    order = Order.from_request(request, strategy=strategy, signal_ts=signal_ts, broker=broker.name, now=now,
                               timeframe=timeframe)
    if not decision.approved:
        if store.insert_order(order, reason="created; risk check failed"):
            store.transition(coid, OrderStatus.DENIED, f"risk rule {decision.rule}: {decision.reason}")
        return ExecutionResult(request.symbol, coid, "denied", OrderStatus.DENIED, f"{decision.rule}: {decision.reason}", signal_ts)
    if not store.insert_order(order, reason=f"risk approved; submitting to {broker.name}"):
        return ExecutionResult(request.symbol, coid, "skipped", None, "recorded concurrently by another process", signal_ts)
    return _submit_recorded(order, broker=broker, store=store, risk_engine=risk_engine)


class InvalidBracket(InvalidOrder):
    """A bracket that does not fit its entry; ``field`` names the term at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class BracketResult:
    entry: ExecutionResult
    children: tuple[Order, ...]  # as stored: take-profit first, then stop-loss (empty if none made)


def bracket_children(entry: OrderRequest, take_profit_price: Decimal, stop_loss_price: Decimal) -> tuple[OrderRequest, OrderRequest]:
    """The exits of a bracket: a gtc limit at the take-profit and a gtc stop at the stop-loss,
    on the opposite side, sized as the entry, linked to it and to each other (one oco group)."""
    side = Side.SELL if Side(entry.side) == Side.BUY else Side.BUY
    coid = entry.client_order_id
    common = dict(account=entry.account, symbol=entry.symbol, side=side, quantity=entry.quantity,
                  time_in_force=TimeInForce.GTC, parent_client_order_id=coid, oco_group=f"{coid}-oco")
    return (
        OrderRequest(client_order_id=f"{coid}-tp", order_type=OrderType.LIMIT, limit_price=take_profit_price, **common),
        OrderRequest(client_order_id=f"{coid}-sl", order_type=OrderType.STOP, stop_price=stop_loss_price, **common),
    )


def _exit_reason(entry_id: str, child: OrderRequest) -> str:
    return f"bracket exit of {entry_id} (oco group {child.oco_group}); active once the entry has filled"


def _sync_exits(exits: list[Order], *, broker: Broker, store: OpsStore) -> None:
    """Bring a native bracket's exits that are still at NEW in line with the broker (by id)."""
    for child in exits:
        if child.status != OrderStatus.NEW:
            continue
        coid = child.client_order_id
        try:
            bo = broker.order_status(coid)
        except BrokerError as exc:
            store.note(coid, f"broker lookup failed, will retry: {exc}")
            continue
        if bo is None:
            store.note(coid, f"bracket exit not found at {broker.name}; will look again")
        else:
            store.sync_from_broker(coid, bo, broker.name)


def _submit_recorded_bracket(entry: Order, exits: list[Order], *, native: NativeBrackets, broker: Broker,
                             store: OpsStore, risk_engine: RiskEngine) -> ExecutionResult:
    """Send a bracket whose entry and exits are in the store at NEW, in one broker call; the
    broker is asked for the entry by id first, so a retry never places a second bracket."""
    coid = entry.client_order_id
    if (done := _resume_or_halt(entry, "bracket", broker=broker, store=store, risk_engine=risk_engine,
                                on_found=lambda: _sync_exits(exits, broker=broker, store=store))) is not None:
        return done
    try:
        placed = native.submit_bracket(entry.to_request(), *(o.to_request() for o in exits))
    except BrokerError as exc:
        if exc.retryable:
            for o in (entry, *exits):
                store.note(o.client_order_id, "broker error, outcome unknown; a re-run looks the bracket up at "
                                              f"the broker and resubmits: {exc}")
            status = OrderStatus.NEW
        else:
            status = store.transition(coid, OrderStatus.REJECTED, f"broker refused: {exc}").status
            for o in exits:
                store.transition(o.client_order_id, OrderStatus.REJECTED, f"broker refused the bracket: {exc}")
        log.warning("broker_error", client_order_id=coid, bracket=True, retryable=exc.retryable, error=exc)
        return ExecutionResult(entry.symbol, coid, "error", status, str(exc), entry.signal_ts)
    if len(placed) != 3 or [bo.client_order_id for bo in placed] != [coid, *(o.client_order_id for o in exits)]:
        raise BrokerError(f"{broker.name} answered bracket {coid} with orders "
                          f"{[bo.client_order_id for bo in placed]}; expected {coid}, its -tp and -sl")
    synced = [store.sync_from_broker(o.client_order_id, bo, broker.name) for o, bo in zip((entry, *exits), placed, strict=True)]
    action = "rejected" if synced[0].status == OrderStatus.REJECTED else "submitted"
    return ExecutionResult(entry.symbol, coid, action, synced[0].status,
                           synced[0].reason or f"sent to {broker.name} as one bracket", entry.signal_ts)


def _submit_native_bracket(
    request: OrderRequest,
    take_profit_price: Decimal,
    stop_loss_price: Decimal,
    *,
    existing: Order | None,
    native: NativeBrackets,
    broker: Broker,
    store: OpsStore,
    risk_engine: RiskEngine,
    prices: Mapping[str, Decimal],
    strategy: str,
    now: datetime | None,
    signal_ts: datetime | None = None,
    timeframe: str | None = None,
) -> BracketResult:
    """:func:`submit_bracket` for a broker that places brackets in one call.

    The entry goes through risk as in :func:`submit_order`. When approved, the exits are
    recorded first and the entry last, so an entry at NEW without exits is always a plain order
    (resumed as one, without a bracket) and a crash in between is mended by a replay. A replay of
    a bracket stuck at NEW looks the entry up at the broker first (:func:`_submit_recorded_bracket`)."""
    coid = request.client_order_id
    requests = bracket_children(request, take_profit_price, stop_loss_price)
    if existing is None:
        if not store.has_account(request.account):
            store.ensure_account(request.account, broker.account().cash)
        now = now or utcnow()
        ctx = RiskContext.from_store(store, request.account, prices, now, commission=commission_estimate(broker))
        decision = risk_engine.check(request, ctx)
        entry = Order.from_request(request, strategy=strategy, signal_ts=signal_ts, broker=broker.name, now=now,
                                   timeframe=timeframe)
        if not decision.approved:
            reason = f"{decision.rule}: {decision.reason}"
            if store.insert_order(entry, reason="created; risk check failed"):
                store.transition(coid, OrderStatus.DENIED, f"risk rule {reason}")
            for child in requests:  # exits left over from an interrupted earlier attempt
                if (left := store.get_order(child.client_order_id)) is not None and left.status == OrderStatus.NEW:
                    store.transition(child.client_order_id, OrderStatus.CANCELLED, f"bracket entry {coid} denied by risk")
            return BracketResult(ExecutionResult(request.symbol, coid, "denied", OrderStatus.DENIED, reason), ())
        for child in requests:
            store.insert_order(Order.from_request(child, strategy=strategy, broker=broker.name, now=now,
                                                  timeframe=timeframe),
                               reason=_exit_reason(coid, child))
        if not store.insert_order(entry, reason=f"risk approved; submitting bracket to {broker.name}"):
            return BracketResult(ExecutionResult(request.symbol, coid, "skipped", None,
                                                 "recorded concurrently by another process"), ())
        existing_entry = entry
    else:
        existing_entry = existing
    found = [store.get_order(c.client_order_id) for c in requests]
    exits = [o for o in found if o is not None]
    if len(exits) != 2:  # a plain order under this id: it gets no exits now
        if existing_entry.status == OrderStatus.NEW:
            return BracketResult(_submit_recorded(existing_entry, broker=broker, store=store, risk_engine=risk_engine), ())
        return BracketResult(ExecutionResult(request.symbol, coid, "skipped", existing_entry.status,
                                             f"already in the ops store as {existing_entry.status}"), ())
    if existing_entry.status == OrderStatus.NEW:
        result = _submit_recorded_bracket(existing_entry, exits, native=native, broker=broker, store=store,
                                          risk_engine=risk_engine)
    else:
        _sync_exits(exits, broker=broker, store=store)
        result = ExecutionResult(request.symbol, coid, "skipped", existing_entry.status,
                                 f"already in the ops store as {existing_entry.status}")
    children = tuple(o for c in requests if (o := store.get_order(c.client_order_id)) is not None)
    return BracketResult(result, children)


def submit_bracket(
    request: OrderRequest,
    *,
    take_profit_price: Decimal | None,
    stop_loss_price: Decimal | None,
    broker: Broker,
    store: OpsStore,
    risk_engine: RiskEngine,
    prices: Mapping[str, Decimal],
    strategy: str = "manual",
    now: datetime | None = None,
    signal_ts: datetime | None = None,
    timeframe: str | None = None,
) -> BracketResult:
    """An entry with a take-profit and a stop-loss exit. Checks first, nothing stored on a refusal:
    the entry's terms and the bracket's (:func:`~trading_pipeline.trading.model.bracket_problem`,
    raising :class:`InvalidBracket`), then whether the broker takes brackets
    (:class:`~trading_pipeline.trading.brokers.base.BracketNotSupported`). The entry goes through
    risk as any order (:func:`submit_order`); the exits do not: they only close the position the
    entry opens, and risk counts them that way (held while the entry works, one per oco group).
    They are made only when the entry was accepted; a replay returns the stored ones.

    A broker with a native ``submit_bracket`` (Alpaca, IB; see brokers/base.py) takes all three
    in one call instead: after risk approves the entry, both exits and then the entry are
    recorded at NEW, then the broker is called once, then all three are synced
    (:func:`_submit_native_bracket`)."""
    from trading_pipeline.trading.brokers.base import (
        BracketNotSupported,
        native_brackets,
        takes_brackets,
    )

    existing = store.get_order(request.client_order_id)
    if existing is None:
        if problem := request.problem(prices.get(request.symbol)):
            raise InvalidOrder(problem)
        if bad := bracket_problem(request.order_type, request.side, take_profit_price=take_profit_price,
                                  stop_loss_price=stop_loss_price, limit_price=request.limit_price,
                                  reference=prices.get(request.symbol)):
            raise InvalidBracket(*bad)
        if len(request.client_order_id) > 61:
            raise InvalidBracket("order_id", "a bracket's entry id is at most 61 characters (its exits add -tp and -sl)")
        if not takes_brackets(broker):
            raise BracketNotSupported(f"brackets are not supported by this broker ({broker.name}) yet")
    assert take_profit_price is not None and stop_loss_price is not None
    if (native := native_brackets(broker)) is not None:
        return _submit_native_bracket(request, take_profit_price, stop_loss_price, existing=existing, native=native,
                                      broker=broker, store=store, risk_engine=risk_engine, prices=prices,
                                      strategy=strategy, now=now, signal_ts=signal_ts, timeframe=timeframe)
    result = submit_order(request, broker=broker, store=store, risk_engine=risk_engine, prices=prices,
                          strategy=strategy, signal_ts=signal_ts, now=now, timeframe=timeframe)
    entry = store.get_order(request.client_order_id)
    if entry is None or entry.status in (OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.NEW):
        return BracketResult(result, ())
    if existing is not None and not store.list_orders(parent=request.client_order_id):
        return BracketResult(result, ())  # a replay of an order placed without a bracket: it gets none now
    children = []
    for child in bracket_children(request, take_profit_price, stop_loss_price):
        stored = store.get_order(child.client_order_id)
        if stored is None:
            order = Order.from_request(child, strategy=strategy, broker=broker.name, now=now or utcnow(),
                                       timeframe=timeframe)
            store.insert_order(order, reason=_exit_reason(request.client_order_id, child))
            stored = store.get_order(child.client_order_id)
        assert stored is not None
        if stored.status == OrderStatus.NEW:
            _submit_recorded(stored, broker=broker, store=store, risk_engine=risk_engine)
            stored = store.get_order(child.client_order_id)
            assert stored is not None
        children.append(stored)
    return BracketResult(result, tuple(children))


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
    max_age: int | None = None,
) -> list[ExecutionResult]:
    """Turn signals into orders, once each. Safe to call again with the same signals.

    ``signals`` needs symbol, timeframe, ts, kind, direction, score (an ``atr_14`` or ``atr``
    column feeds ATR sizing). ``prices`` maps symbol -> last bar close. Which orders the
    signals ask for is :func:`~trading_pipeline.trading.decisions.decide`'s answer (the same
    function the backtest uses); ``rules`` default to one position per symbol, exits on
    opposite signals, no shorts. One result per signal, in (ts, symbol, kind) order.

    With exit rules (``stop_loss_atr`` / ``take_profit_atr``) an entry whose signal has an ATR
    goes with its bracket (:func:`submit_bracket`; the result's reason names the exits); one
    without gets a plain order and the reason says why. A broker that takes no brackets gets
    nothing for a bracketed entry: the result is ``rejected`` with the broker's answer, nothing
    is stored. A re-run sends what a crash left at NEW, the bracket's exits included.

    Each order records its signal's ``timeframe``. With ``max_age`` (TRADING_SIGNAL_MAX_AGE) a
    signal with no order yet whose ``age_bars`` column is above it is not placed: its result is
    ``skipped_stale``. A signal whose order is already stored is replayed as above whatever its
    age (a crash's NEW order is finished, never dropped).
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
        elif exits := store.list_orders(parent=coid):
            results.append(_replay_bracket(existing, exits, sig.ts, broker=broker, store=store, risk_engine=risk_engine,
                                           prices=prices, strategy=strategy, now=now))
        elif existing.status == OrderStatus.NEW:
            results.append(_submit_recorded(existing, broker=broker, store=store, risk_engine=risk_engine))
        else:
            results.append(ExecutionResult(sig.symbol, coid, "skipped", existing.status, f"already in the ops store as {existing.status}", sig.ts))
    pf = store.portfolio(account)
    working = {o.symbol for o in store.list_orders(account=account, status=list(OPEN_STATUSES))}
    decisions = decide(
        [sig for _, sig in fresh], positions={p.symbol: p.quantity for p in pf.open_positions()},
        working=working, prices=prices, equity=pf.equity(prices), sizing=sizing, rules=rules, max_age=max_age,
    )
    for (at, sig), d in zip(fresh, decisions, strict=True):
        coid = client_order_id(strategy, account, sig.symbol, sig.ts, d.side) if d.side else None
        if isinstance(d, Skip):
            action = "skipped_stale" if d.rule == "stale" else "skipped"
            if d.rule == "no_price":
                action = "denied"
                store.record_risk_event(rule="price_collar", reason=d.reason, client_order_id=coid, account=account,
                                        symbol=sig.symbol, side=d.side.value if d.side else None)
            results[at] = ExecutionResult(sig.symbol, coid, action, None, d.reason, sig.ts)
            continue
        assert coid is not None
        request = OrderRequest(coid, account, sig.symbol, d.side, d.quantity, OrderType.MARKET, None, TimeInForce.DAY)
        result = _send_decided(d, request, broker=broker, store=store, risk_engine=risk_engine, prices=prices,
                               strategy=strategy, now=now)
        log.info("signal_order", symbol=sig.symbol, client_order_id=coid, purpose=d.purpose,
                 action=result.action, status=result.status, reason=result.reason,
                 stop_loss=d.stop_loss, take_profit=d.take_profit)
        results[at] = result
    return [r for r in results if r is not None]


def _send_decided(d: Intent, request: OrderRequest, *, broker: Broker, store: OpsStore, risk_engine: RiskEngine,
                  prices: Mapping[str, Decimal], strategy: str, now: datetime | None) -> ExecutionResult:
    """One order :func:`decide` asked for: with its bracket (:func:`submit_bracket`) when it priced
    one, plain otherwise (``d.note`` says why an entry has none when the rules ask for one). A
    broker that takes no brackets gets nothing: the entry is not sent without its exits."""
    from trading_pipeline.trading.brokers.base import BracketNotSupported

    sig = d.signal
    if d.stop_loss is None or d.take_profit is None:
        result = submit_order(request, broker=broker, store=store, risk_engine=risk_engine, prices=prices,
                              strategy=strategy, signal_ts=sig.ts, now=now, timeframe=sig.timeframe)
        return replace(result, reason=f"{result.reason}; {d.note}") if d.note else result
    try:
        bracket = submit_bracket(request, take_profit_price=d.take_profit, stop_loss_price=d.stop_loss, broker=broker,
                                 store=store, risk_engine=risk_engine, prices=prices, strategy=strategy, now=now,
                                 signal_ts=sig.ts, timeframe=sig.timeframe)
    except BracketNotSupported as exc:
        return ExecutionResult(sig.symbol, request.client_order_id, "rejected", None,
                               f"{exc}: the entry is not sent without its stop-loss {d.stop_loss} and "
                               f"take-profit {d.take_profit}", sig.ts)
    except InvalidOrder as exc:  # decide() prices brackets that pass; kept so one signal never stops a batch
        return ExecutionResult(sig.symbol, request.client_order_id, "skipped", None, f"bracket refused: {exc}", sig.ts)
    entry = bracket.entry
    if not bracket.children:
        return replace(entry, signal_ts=sig.ts)
    exits = ", ".join(f"{c.client_order_id} {c.order_type.value} {c.limit_price or c.stop_price}" for c in bracket.children)
    return replace(entry, reason=f"{entry.reason}; bracket exits {exits}", signal_ts=sig.ts)


def _replay_bracket(entry: Order, exits: list[Order], signal_ts: datetime, *, broker: Broker, store: OpsStore, risk_engine: RiskEngine,
                    prices: Mapping[str, Decimal], strategy: str, now: datetime | None) -> ExecutionResult:
    """A re-run of a signal whose entry has stored bracket exits: through :func:`submit_bracket`'s
    replay (with the stored exit prices), which sends what a crash left at NEW the way the broker
    takes brackets (the paper broker one by one, a native bracket in one call) and nothing twice."""
    tp = next((o.limit_price for o in exits if o.order_type == OrderType.LIMIT), None)
    sl = next((o.stop_price for o in exits if o.order_type == OrderType.STOP), None)
    bracket = submit_bracket(entry.to_request(), take_profit_price=tp, stop_loss_price=sl, broker=broker, store=store,
                             risk_engine=risk_engine, prices=prices, strategy=strategy, now=now,
                             timeframe=entry.timeframe)
    return replace(bracket.entry, signal_ts=signal_ts)


def cancel_order(client_order_id: str, *, broker: Broker, store: OpsStore) -> Order:
    """Ask the broker to cancel; the store records the request and the broker's answer."""
    order = store.update_order(client_order_id, lambda o, _c: [o.request_cancel()])
    known = broker.order_status(client_order_id)
    if known is None:
        if order.status == OrderStatus.NEW:
            return store.transition(client_order_id, OrderStatus.CANCELLED, "cancelled before reaching the broker")
        raise BrokerError(f"broker {broker.name} does not know order {client_order_id}")
    cancelled = store.sync_from_broker(client_order_id, broker.cancel(client_order_id), broker.name)
    for child in store.list_orders(parent=client_order_id, status=list(OPEN_STATUSES)):
        # a bracket's exits go with their entry (the broker cancelled them with it)
        bo = broker.order_status(child.client_order_id)
        if bo is not None:
            store.sync_from_broker(child.client_order_id, bo, broker.name)
        elif child.status == OrderStatus.NEW:
            store.transition(child.client_order_id, OrderStatus.CANCELLED, f"bracket entry {client_order_id} cancelled")
    return cancelled


class UnknownOrder(LookupError):
    """No order with this client order id in the ops store."""


@dataclass(frozen=True)
class ModifyResult:
    action: str  # modified | denied (pre-trade risk)
    order: Order  # as stored after the attempt (unchanged when denied)
    reason: str  # "rule: reason" when denied


def modify_order(
    client_order_id: str,
    *,
    broker: Broker,
    store: OpsStore,
    risk_engine: RiskEngine,
    prices: Mapping[str, Decimal],
    quantity: Decimal | None = None,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    trail_percent: Decimal | None = None,
    trail_amount: Decimal | None = None,
    now: datetime | None = None,
) -> ModifyResult:
    """Change a working order's quantity, limit, stop or trail (``trading order modify``,
    ``PATCH /orders/{id}``): the terms check (:func:`~trading_pipeline.trading.model.order_problem`,
    a changed stop against the last close), then pre-trade risk on the order with its new terms
    (its unfilled rest, as if new: the order itself is left out of the working orders), then the
    broker, then one ``modified`` event with old and new terms. The paper broker's book changes in
    the same transaction as the ops store's order.

    Raises :class:`UnknownOrder`, :class:`~trading_pipeline.trading.orders.IllegalTransition`
    (not working, a cancel pending, or a quantity not above the filled part),
    :class:`~trading_pipeline.trading.model.InvalidOrder` (contradictory terms or no change) and
    :class:`BrokerError` (``ModifyNotSupported`` for terms the broker cannot replace yet). A risk
    denial is recorded as a risk event and returned with action ``denied``. In every refused case
    the order (and the broker's book) is unchanged.
    """
    from trading_pipeline.trading.brokers.paper import PaperBroker
    from trading_pipeline.trading.orders import modified_terms

    existing = store.get_order(client_order_id)
    if existing is None:
        raise UnknownOrder(f"no order {client_order_id!r} in the ops store")
    changes = {"quantity": quantity, "limit_price": limit_price, "stop_price": stop_price,
               "trail_percent": trail_percent, "trail_amount": trail_amount}
    trial = existing.copy()
    trial.modify(**changes)  # state, quantity and terms: raises before anything is asked or written
    if stop_price is not None and (problem := order_problem(
        trial.order_type, trial.side, limit_price=trial.limit_price, stop_price=trial.stop_price,
        trail_percent=trial.trail_percent, trail_amount=trial.trail_amount, time_in_force=trial.time_in_force,
        reference=prices.get(existing.symbol),
    )):
        raise InvalidOrder(problem)
    new = modified_terms(existing, **changes)
    request = OrderRequest(
        client_order_id, existing.account, existing.symbol, existing.side,
        new["quantity"] - existing.filled_quantity, existing.order_type, new["limit_price"],
        existing.time_in_force, stop_price=new["stop_price"], trail_percent=new["trail_percent"],
        trail_amount=new["trail_amount"],
    )
    ctx = RiskContext.from_store(store, existing.account, prices, now or utcnow(),
                                 commission=commission_estimate(broker), exclude=client_order_id)
    decision = risk_engine.check(request, ctx)
    if not decision.approved:
        return ModifyResult("denied", existing, f"{decision.rule}: {decision.reason}")
    sent = {k: v for k, v in changes.items() if v is not None}
    if "trail_percent" in sent or "trail_amount" in sent:
        sent["trail_percent"], sent["trail_amount"] = new["trail_percent"], new["trail_amount"]
    same_book = isinstance(broker, PaperBroker) and broker.store.url == store.url

    def change(o: Order, conn: Connection) -> list:
        event = o.modify(**changes)
        if same_book:
            assert isinstance(broker, PaperBroker)
            broker.modify(client_order_id, conn=conn, **sent)
        return [event]

    if not same_book:  # a live broker first: if it refuses, nothing is written
        broker.modify(client_order_id, **sent)
    order = store.update_order(client_order_id, change)
    log.info("order_modified", client_order_id=client_order_id, terms={k: str(v) for k, v in sent.items()})
    return ModifyResult("modified", order, "modified")


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
