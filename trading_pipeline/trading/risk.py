"""Pre-trade risk: no order reaches a broker without passing these rules (docs/decisions.md #8).

(Past 500 lines on purpose: the limits, the context they are measured in and every rule with
its exact definition read together; split, a rule's meaning would sit two files from its check.)

Limits come from one YAML file (``risk.yaml``, see its comments). Every limit is a strict
ceiling: an order is rejected when the checked value REACHES the limit, so "max 10 open
orders" means at most 9 are working when a new one is accepted. Rules that measure holdings
or losses (position, exposure, concentration, buying power, daily loss) only reject orders
that increase the position's size, so a trader can always reduce risk. Every rejection is stored in the ops
store with its rule, the numbers, and a sentence a human can act on.

Two rules need more than a limit, so here is exactly what they compute:

**buying_power.** ``buying power = max_leverage x equity - gross exposure``, with equity =
cash + market value of the booked positions and gross exposure = sum of |booked position|
x last close (positions without a close are valued at cost in both, as the portfolio
does). With ``max_leverage: 1`` (the default: a cash account, no margin) and only long
positions this is exactly the account's cash. A short sale is treated as on a margin
account: its proceeds are not spendable and the short itself takes its full value of
buying power (at leverage 1, shorting 10,000 of stock leaves cash + 10,000 but buying power
down by 10,000). Working orders reserve buying power before they fill: ``committed`` = sum,
over working orders, of the part of their unfilled quantity that opens or adds to a
position (a buy that adds to a long, a sell that adds to or opens a short; taken in order
of creation, starting from the booked position) x their price (a limit or stop-limit: its limit;
a stop: its stop price; a market order or a trailing stop: the last close) + their estimated
commission. A new order needs ``required = opening quantity
x price + estimated commission``, where the opening quantity is the part of the order that
opens or adds to a position after the working orders, and the price is valued the same way. The order is rejected when ``committed + required >= buying power``. An order
that only reduces a position (a sell against a long, a buy covering a short) needs nothing
and is never blocked by this rule. Commission is estimated only when the broker states its
schedule (the paper broker's ``commission(quantity)``; the backtest's fill model);
otherwise it counts as 0. A working market order whose symbol has neither a last close nor
a position to value it by makes buying power unknown: opening orders are then rejected.

**daily_loss_limit.** Today's P&L is the change in equity since the start of the day (the
day is the UTC date of the check, as for "realized today"), so a loss carried in from an
earlier day does not count again. The start-of-day equity, in order of preference:

1. the account's latest equity mark on an earlier date (the ops store's ``equity_marks``:
   the ``ops/orders`` asset marks every account at each session's close, and every risk
   check updates the mark of its day, so this is the previous session's closing equity);
2. with no earlier mark and no fill before today, the starting cash (equity cannot have
   changed before the first fill);
3. otherwise (positions carried in from before marks were recorded, e.g. the first day
   after an upgrade): today's P&L = realized P&L today + (unrealized P&L now - unrealized
   P&L at today's first mark), so an old unrealized loss is left out; realized P&L booked
   today is counted in full, even on a position opened earlier (the conservative side).

Orders that open or add to a position (any part of them: selling 101 against a long of 100
opens a short) are then refused while ``-(today's P&L) >= daily_loss_limit``; orders that
only reduce a position still pass (the kill switch is the rule that stops everything).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field

from trading_pipeline.trading.model import OrderRequest, OrderType, Side
from trading_pipeline.trading.orders import utcnow

if TYPE_CHECKING:
    from trading_pipeline.trading.store import OpsStore

ZERO = Decimal(0)


class RiskLimits(BaseModel):
    """The limits, as in ``risk.yaml``. Amounts are in the account currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_quantity: Decimal = Field(default=Decimal("10000"), gt=0)
    max_order_notional: Decimal = Field(default=Decimal("50000"), gt=0)
    max_position_quantity: Decimal = Field(default=Decimal("20000"), gt=0)
    max_symbol_exposure: Decimal = Field(default=Decimal("100000"), gt=0)
    max_total_exposure: Decimal = Field(default=Decimal("500000"), gt=0)
    max_concentration_pct: Decimal = Field(default=Decimal("25"), gt=0, le=100)
    daily_loss_limit: Decimal = Field(default=Decimal("5000"), gt=0)
    max_leverage: Decimal = Field(default=Decimal("1"), gt=0)
    max_open_orders: int = Field(default=20, gt=0)
    max_orders_per_minute: int = Field(default=30, gt=0)
    price_collar_pct: Decimal = Field(default=Decimal("5"), gt=0)
    # Risk monitoring (trading_pipeline/trading/risk_monitor.py): warnings, never rejections.
    # None: that warning is off.
    warn_at_pct: Decimal | None = Field(default=None, gt=0, le=100)  # warn at this % of a limit
    drawdown_warn_pct: Decimal | None = Field(default=None, gt=0, le=100)  # equity this % below its peak
    var_budget: Decimal | None = Field(default=None, gt=0)  # 1-day 95% historical VaR above this amount

    @classmethod
    def from_yaml(cls, path: Path | str) -> RiskLimits:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of limit names to values")
        return cls.model_validate(data.get("limits", data))


def opening_quantity(position: Decimal, signed: Decimal) -> Decimal:
    """The part of a signed change ``signed`` to ``position`` that opens or adds to a position
    (a buy of 150 against a short of 100 opens 50 long; a sell against a long opens nothing
    until it goes past flat)."""
    if position == 0 or (position > 0) == (signed > 0):
        return abs(signed)
    return max(abs(signed) - abs(position), ZERO)


def order_price(
    order_type: OrderType | str, limit_price: Decimal | None, stop_price: Decimal | None, last: Decimal | None
) -> Decimal | None:
    """The price an order is valued at for notional and buying power: a limit or stop-limit
    order's limit, a stop's stop price, a market or trailing stop order's last close (a
    trailing stop's trigger moves with the market)."""
    t = OrderType(order_type)
    if t in (OrderType.LIMIT, OrderType.STOP_LIMIT) and limit_price is not None:
        return limit_price
    if t == OrderType.STOP and stop_price is not None:
        return stop_price
    return last


CommissionEstimate = Callable[[Decimal], Decimal]  # quantity -> estimated commission


@dataclass(frozen=True)
class RiskContext:
    """What the rules need to know about the account at the moment of the check."""

    account: str
    equity: Decimal
    # symbol -> signed quantity: booked positions plus the unfilled rest of working orders
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    last_prices: Mapping[str, Decimal] = field(default_factory=dict)  # symbol -> last bar close
    open_orders: int = 0
    orders_last_minute: int = 0
    daily_pnl: Decimal = ZERO  # equity now - equity at the start of the day; a loss is negative
    now: datetime = field(default_factory=utcnow)
    # the start-of-day equity daily_pnl is measured from (None: not known, e.g. a hand-built context)
    day_start_equity: Decimal | None = None
    # gross value of the BOOKED positions (working orders excluded); None: computed from
    # ``positions`` x ``last_prices``, for contexts whose positions are all booked
    gross_exposure: Decimal | None = None
    # buying power reserved by working orders (see the module docstring)
    committed: Decimal = ZERO
    # symbols with a working order that opens a position but no price to value it by
    unpriced_working: tuple[str, ...] = ()
    # the broker's commission schedule, when it states one
    commission: CommissionEstimate | None = None

    @classmethod
    def from_store(
        cls,
        store: OpsStore,
        account: str,
        prices: Mapping[str, Decimal],
        now: datetime | None = None,
        *,
        commission: CommissionEstimate | None = None,
        record_mark: bool = True,
        exclude: str | None = None,
    ) -> RiskContext:
        """Build the context from the ops store's booked state and the latest closes.

        ``prices`` should hold a last close for the order's symbol and for every symbol the
        account holds or has working orders in (:meth:`OpsStore.symbols_in_play`); a held
        symbol without one is valued at cost. With ``record_mark`` (the default; read-only
        views pass False) the equity seen here is recorded as today's equity mark. ``exclude``: a
        working order left out of the working orders and the order counts (a modify checks that
        order with its new terms as if it were new).
        """
        from trading_pipeline.trading.model import OrderStatus, Side

        now = now or utcnow()
        pf = store.portfolio(account)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        # Working orders count as if filled: otherwise a batch of orders, each under a
        # position/exposure/concentration/buying-power limit on its own, could exceed it together.
        positions = {p.symbol: p.quantity for p in pf.open_positions()}
        working = store.list_orders(
            account=account, status=[OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED]
        )
        committed = ZERO
        unpriced: set[str] = set()
        excluded = [o for o in working if o.client_order_id == exclude]
        working = [o for o in working if o.client_order_id != exclude]
        # A bracket's exits: held (not counted) while their entry works; once it has filled, the
        # exits of one one-cancels-other group count once (only one of them can fill).
        open_ids = {o.client_order_id for o in working}
        oco_seen: set[str] = set()
        for o in sorted(working, key=lambda o: (o.created_at, o.client_order_id)):
            if o.parent_client_order_id is not None:
                if o.parent_client_order_id in open_ids or (o.oco_group and o.oco_group in oco_seen):
                    continue
                if o.oco_group:
                    oco_seen.add(o.oco_group)
            remaining = o.quantity - o.filled_quantity
            signed = remaining if o.side == Side.BUY else -remaining
            before = positions.get(o.symbol, ZERO)
            positions[o.symbol] = before + signed
            opening = opening_quantity(before, signed) if remaining > 0 else ZERO
            if opening <= 0:
                continue
            price = order_price(o.order_type, o.limit_price, o.stop_price, prices.get(o.symbol))
            if price is None and o.symbol in pf.positions and pf.positions[o.symbol].avg_price > 0:
                price = pf.positions[o.symbol].avg_price
            if price is None or price <= 0:
                unpriced.add(o.symbol)
                continue
            committed += opening * price + (commission(remaining) if commission is not None else ZERO)
        equity = pf.equity(prices)
        unrealized = pf.unrealized_pnl(prices)
        daily_pnl, day_start_equity = _daily_pnl(store, account, pf.starting_cash, equity, unrealized, now, day_start)
        if record_mark:
            store.record_equity_mark(account, now.date(), equity, unrealized, now)
        return cls(
            account=account,
            equity=equity,
            positions=positions,
            last_prices=dict(prices),
            open_orders=store.count_open_orders(account) - len(excluded),
            orders_last_minute=store.count_orders_since(account, now - timedelta(minutes=1))
            - sum(1 for o in excluded if o.created_at >= now - timedelta(minutes=1)),
            daily_pnl=daily_pnl,
            now=now,
            day_start_equity=day_start_equity,
            gross_exposure=pf.gross_exposure(prices),
            committed=committed,
            unpriced_working=tuple(sorted(unpriced)),
            commission=commission,
        )


def _daily_pnl(
    store: OpsStore, account: str, starting_cash: Decimal, equity: Decimal, unrealized: Decimal,
    now: datetime, day_start: datetime,
) -> tuple[Decimal, Decimal]:
    """(today's P&L, start-of-day equity) as the module docstring defines them."""
    prior = store.last_equity_mark_before(account, now.date())
    if prior is not None:
        return equity - prior.last_equity, prior.last_equity
    if not store.has_fills_before(account, day_start):
        return equity - starting_cash, starting_cash
    first = store.equity_mark(account, now.date())
    first_unrealized = first.first_unrealized_pnl if first is not None else unrealized
    pnl = store.realized_pnl_since(account, day_start) + unrealized - first_unrealized
    return pnl, equity - pnl


@dataclass(frozen=True)
class RiskDecision:
    approved: bool
    rule: str | None = None
    reason: str = "all risk checks passed"
    value: Decimal | None = None
    limit: Decimal | None = None

    def __bool__(self) -> bool:
        return self.approved


_APPROVED = RiskDecision(True)


def _reject(rule: str, reason: str, value: Decimal | int | None = None, limit: Decimal | int | None = None) -> RiskDecision:
    return RiskDecision(
        False,
        rule,
        reason,
        None if value is None else Decimal(value),
        None if limit is None else Decimal(limit),
    )


def _fmt(x: Decimal) -> str:
    return f"{x:,.2f}"


class RiskEngine:
    """Checks one order request against the limits; stores every rejection.

    ``store`` provides the kill switch (so the CLI can flip it from another process) and
    receives rejections; without one (pure unit tests of a rule) nothing is stored.
    """

    def __init__(self, limits: RiskLimits, store: OpsStore | None = None) -> None:
        self.limits = limits
        self.store = store
        self.rules: list[tuple[str, Callable[[OrderRequest, RiskContext], RiskDecision | None]]] = [
            ("kill_switch", self._kill_switch),
            ("price_collar", self._price_collar),
            ("max_order_quantity", self._max_order_quantity),
            ("max_order_notional", self._max_order_notional),
            ("max_position_quantity", self._max_position_quantity),
            ("max_symbol_exposure", self._max_symbol_exposure),
            ("max_total_exposure", self._max_total_exposure),
            ("max_concentration", self._max_concentration),
            ("buying_power", self._buying_power),
            ("daily_loss_limit", self._daily_loss),
            ("max_open_orders", self._max_open_orders),
            ("max_orders_per_minute", self._max_orders_per_minute),
        ]

    @classmethod
    def from_file(cls, path: Path | str, store: OpsStore | None = None) -> RiskEngine:
        return cls(RiskLimits.from_yaml(path), store)

    def check(self, order: OrderRequest, context: RiskContext) -> RiskDecision:
        """The first rule that fails decides; a rejection is recorded before returning."""
        for _name, rule in self.rules:
            decision = rule(order, context)
            if decision is not None and not decision.approved:
                if self.store is not None:
                    self.store.record_risk_event(
                        rule=decision.rule or _name,
                        reason=decision.reason,
                        client_order_id=order.client_order_id,
                        account=order.account,
                        symbol=order.symbol,
                        side=Side(order.side).value,
                        quantity=order.quantity,
                        value=decision.value,
                        limit_value=decision.limit,
                        ts=context.now,
                    )
                return decision
        return _APPROVED

    # ---- helpers -------------------------------------------------------------------------
    @staticmethod
    def _price(order: OrderRequest, ctx: RiskContext) -> Decimal | None:
        """The price the order is expected to trade at (:func:`order_price`)."""
        return order_price(order.order_type, order.limit_price, order.stop_price, ctx.last_prices.get(order.symbol))

    @staticmethod
    def _after(order: OrderRequest, ctx: RiskContext) -> tuple[Decimal, Decimal]:
        before = ctx.positions.get(order.symbol, ZERO)
        signed = order.quantity if Side(order.side) == Side.BUY else -order.quantity
        return before, before + signed

    @staticmethod
    def _gross(ctx: RiskContext) -> Decimal:
        if ctx.gross_exposure is not None:
            return ctx.gross_exposure
        return sum((abs(q) * ctx.last_prices.get(s, ZERO) for s, q in ctx.positions.items()), ZERO)

    def buying_power(self, ctx: RiskContext) -> Decimal:
        """max_leverage x equity - gross exposure of the booked positions (before working orders)."""
        return self.limits.max_leverage * ctx.equity - self._gross(ctx)

    def _opening(self, order: OrderRequest, ctx: RiskContext) -> Decimal:
        """The part of ``order`` that opens or adds to its symbol's position (after working orders)."""
        before, after = self._after(order, ctx)
        return opening_quantity(before, after - before)

    def _increases(self, order: OrderRequest, ctx: RiskContext) -> bool:
        before, after = self._after(order, ctx)
        return abs(after) > abs(before)

    # ---- the rules -----------------------------------------------------------------------
    def halted(self) -> str | None:
        """Why no order may go out now (the kill switch is on), or None. Checked for every new
        order by :meth:`check`, and before a recorded order is (re)sent."""
        if self.store is None:
            return None
        ks = self.store.kill_switch()
        if not ks.active:
            return None
        by = f" by {ks.updated_by}" if ks.updated_by else ""
        return (f"kill switch is ON (set{by} at {ks.updated_at}: {ks.reason or 'no reason given'}); "
                "no new orders until `trading kill-switch off`")

    def _kill_switch(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        reason = self.halted()
        return _reject("kill_switch", reason) if reason else None

    def _price_collar(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        last = ctx.last_prices.get(order.symbol)
        if last is None or last <= 0:
            return _reject("price_collar", f"no last close for {order.symbol}: cannot check price or size the order")
        lim = self.limits.price_collar_pct
        for what, price in (("stop", order.stop_price), ("limit", order.limit_price)):
            if price is None:
                continue
            dev_pct = abs(price - last) / last * 100
            if dev_pct >= lim:
                return _reject(
                    "price_collar",
                    f"{what} {price} is {dev_pct:.2f}% from the last close {last}; collar is {lim}%",
                    dev_pct,
                    lim,
                )
        return None

    def _max_order_quantity(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        lim = self.limits.max_order_quantity
        if order.quantity >= lim:
            return _reject(
                "max_order_quantity",
                f"order quantity {order.quantity} reaches the limit {lim} per order",
                order.quantity,
                lim,
            )
        return None

    def _max_order_notional(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        price = self._price(order, ctx)
        assert price is not None  # the collar rule ran first
        notional = order.quantity * price
        lim = self.limits.max_order_notional
        if notional >= lim:
            return _reject(
                "max_order_notional",
                f"order notional {_fmt(notional)} ({order.quantity} x {price}) reaches the limit {_fmt(lim)}",
                notional,
                lim,
            )
        return None

    def _max_position_quantity(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        before, after = self._after(order, ctx)
        lim = self.limits.max_position_quantity
        if self._increases(order, ctx) and abs(after) >= lim:
            return _reject(
                "max_position_quantity",
                f"{order.symbol} position would go from {before} to {after}; limit is {lim} shares",
                abs(after),
                lim,
            )
        return None

    def _max_symbol_exposure(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        _before, after = self._after(order, ctx)
        price = ctx.last_prices[order.symbol]
        exposure = abs(after) * price
        lim = self.limits.max_symbol_exposure
        if self._increases(order, ctx) and exposure >= lim:
            return _reject(
                "max_symbol_exposure",
                f"{order.symbol} exposure would be {_fmt(exposure)} ({after} x {price}); limit is {_fmt(lim)}",
                exposure,
                lim,
            )
        return None

    def _total_exposure_after(self, order: OrderRequest, ctx: RiskContext) -> Decimal:
        _before, after = self._after(order, ctx)
        total = ZERO
        for sym, qty in ctx.positions.items():
            if sym != order.symbol:
                total += abs(qty) * ctx.last_prices.get(sym, ZERO)
        return total + abs(after) * ctx.last_prices[order.symbol]

    def _max_total_exposure(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        total = self._total_exposure_after(order, ctx)
        lim = self.limits.max_total_exposure
        if self._increases(order, ctx) and total >= lim:
            return _reject(
                "max_total_exposure",
                f"total gross exposure would be {_fmt(total)}; limit is {_fmt(lim)}",
                total,
                lim,
            )
        return None

    def _max_concentration(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        if not self._increases(order, ctx):
            return None
        _before, after = self._after(order, ctx)
        exposure = abs(after) * ctx.last_prices[order.symbol]
        lim = self.limits.max_concentration_pct
        if ctx.equity <= 0:
            return _reject("max_concentration", f"account equity is {_fmt(ctx.equity)}: no room for new exposure", ZERO, lim)
        pct = exposure / ctx.equity * 100
        if pct >= lim:
            return _reject(
                "max_concentration",
                f"{order.symbol} would be {pct:.2f}% of equity {_fmt(ctx.equity)} ({_fmt(exposure)}); limit is {lim}%",
                pct,
                lim,
            )
        return None

    def _buying_power(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        opening = self._opening(order, ctx)
        if opening <= 0:
            return None  # only reduces a position (after working orders): needs no buying power
        if ctx.unpriced_working:
            return _reject(
                "buying_power",
                f"buying power unknown: working orders in {', '.join(ctx.unpriced_working)} have no limit "
                "price and no last close to value them",
            )
        price = self._price(order, ctx)
        assert price is not None  # the collar rule ran first
        fee = ctx.commission(order.quantity) if ctx.commission is not None else ZERO
        required = opening * price + fee
        total = ctx.committed + required
        lev = self.limits.max_leverage
        bp = self.buying_power(ctx)
        if total >= bp:
            what = f"{Side(order.side).value} {order.quantity} {order.symbol}"
            if opening != order.quantity:
                what += f" (opening {opening})"
            return _reject(
                "buying_power",
                f"{what} needs {_fmt(required)} ({opening} x {price} + commission {_fmt(fee)}); with "
                f"{_fmt(ctx.committed)} held by working orders that is {_fmt(total)}, reaching buying power "
                f"{_fmt(bp)} ({lev} x equity {_fmt(ctx.equity)} - gross exposure {_fmt(self._gross(ctx))})",
                total,
                bp,
            )
        return None

    def _daily_loss(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        if self._opening(order, ctx) <= 0:
            return None  # past the limit a trader may still cut a position (the kill switch stops all)
        loss = -ctx.daily_pnl
        lim = self.limits.daily_loss_limit
        if loss >= lim:
            since = (
                f"equity {_fmt(ctx.equity)} now vs {_fmt(ctx.day_start_equity)} at the start of the day"
                if ctx.day_start_equity is not None
                else "change in equity since the start of the day"
            )
            return _reject(
                "daily_loss_limit",
                f"today's loss is {_fmt(loss)} ({since}); limit is {_fmt(lim)}",
                loss,
                lim,
            )
        return None

    def _max_open_orders(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        lim = self.limits.max_open_orders
        if ctx.open_orders >= lim:
            return _reject(
                "max_open_orders",
                f"{ctx.open_orders} orders already working on {order.account}; limit is {lim}",
                ctx.open_orders,
                lim,
            )
        return None

    def _max_orders_per_minute(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        lim = self.limits.max_orders_per_minute
        if ctx.orders_last_minute >= lim:
            return _reject(
                "max_orders_per_minute",
                f"{ctx.orders_last_minute} orders sent in the last minute on {order.account}; limit is {lim}",
                ctx.orders_last_minute,
                lim,
            )
        return None
