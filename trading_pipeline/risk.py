"""Pre-trade risk: no order reaches a broker without passing these rules (design decision 8).

Limits come from one YAML file (``risk.yaml``, see its comments). Every limit is a strict
ceiling: an order is rejected when the checked value REACHES the limit, so "max 10 open
orders" means at most 9 are working when a new one is accepted. Rules that measure holdings
(position, exposure, concentration) only reject orders that increase the position's size, so
a trader can always reduce risk. Every rejection is stored in the ops store with its rule,
the numbers, and a sentence a human can act on.
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

from trading_pipeline.brokers.base import OrderRequest, OrderType, Side
from trading_pipeline.orders import utcnow

if TYPE_CHECKING:
    from trading_pipeline.ops_store import OpsStore

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
    max_open_orders: int = Field(default=20, gt=0)
    max_orders_per_minute: int = Field(default=30, gt=0)
    price_collar_pct: Decimal = Field(default=Decimal("5"), gt=0)

    @classmethod
    def from_yaml(cls, path: Path | str) -> RiskLimits:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of limit names to values")
        return cls.model_validate(data.get("limits", data))


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
    daily_pnl: Decimal = ZERO  # realized today + unrealized now; a loss is negative
    now: datetime = field(default_factory=utcnow)

    @classmethod
    def from_store(
        cls,
        store: OpsStore,
        account: str,
        prices: Mapping[str, Decimal],
        now: datetime | None = None,
    ) -> RiskContext:
        """Build the context from the ops store's booked state and the latest closes."""
        from trading_pipeline.brokers.base import OrderStatus, Side

        now = now or utcnow()
        pf = store.portfolio(account)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        # Working orders count as if filled: otherwise a batch of orders, each under a
        # position/exposure/concentration limit on its own, could exceed it together.
        positions = {p.symbol: p.quantity for p in pf.open_positions()}
        working = store.list_orders(
            account=account, status=[OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED]
        )
        for o in working:
            remaining = o.quantity - o.filled_quantity
            positions[o.symbol] = positions.get(o.symbol, ZERO) + (remaining if o.side == Side.BUY else -remaining)
        return cls(
            account=account,
            equity=pf.equity(prices),
            positions=positions,
            last_prices=dict(prices),
            open_orders=store.count_open_orders(account),
            orders_last_minute=store.count_orders_since(account, now - timedelta(minutes=1)),
            daily_pnl=store.realized_pnl_since(account, day_start) + pf.unrealized_pnl(prices),
            now=now,
        )


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
        """The price the order is expected to trade at: its limit, else the last close."""
        if order.order_type == OrderType.LIMIT and order.limit_price is not None:
            return order.limit_price
        return ctx.last_prices.get(order.symbol)

    @staticmethod
    def _after(order: OrderRequest, ctx: RiskContext) -> tuple[Decimal, Decimal]:
        before = ctx.positions.get(order.symbol, ZERO)
        signed = order.quantity if Side(order.side) == Side.BUY else -order.quantity
        return before, before + signed

    def _increases(self, order: OrderRequest, ctx: RiskContext) -> bool:
        before, after = self._after(order, ctx)
        return abs(after) > abs(before)

    # ---- the rules -----------------------------------------------------------------------
    def _kill_switch(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        if self.store is None:
            return None
        ks = self.store.kill_switch()
        if ks.active:
            by = f" by {ks.updated_by}" if ks.updated_by else ""
            return _reject(
                "kill_switch",
                f"kill switch is ON (set{by} at {ks.updated_at}: {ks.reason or 'no reason given'}); "
                "no new orders until `trading kill-switch off`",
            )
        return None

    def _price_collar(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        last = ctx.last_prices.get(order.symbol)
        if last is None or last <= 0:
            return _reject("price_collar", f"no last close for {order.symbol}: cannot check price or size the order")
        if order.order_type != OrderType.LIMIT or order.limit_price is None:
            return None
        dev_pct = abs(order.limit_price - last) / last * 100
        lim = self.limits.price_collar_pct
        if dev_pct >= lim:
            return _reject(
                "price_collar",
                f"limit {order.limit_price} is {dev_pct:.2f}% from the last close {last}; collar is {lim}%",
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

    def _daily_loss(self, order: OrderRequest, ctx: RiskContext) -> RiskDecision | None:
        loss = -ctx.daily_pnl
        lim = self.limits.daily_loss_limit
        if loss >= lim:
            return _reject(
                "daily_loss_limit",
                f"today's loss is {_fmt(loss)} (realized + unrealized); limit is {_fmt(lim)}",
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
