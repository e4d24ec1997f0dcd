"""The paper broker: fills against real bars, keeps its book in the ops store.

Point in time (docs/decisions.md #5): an order acts no earlier than the first bar that STARTS
after the order was submitted. A market order fills at that bar's open; a limit order fills
on the first such bar that trades through its limit (buy: low < limit; sell: high > limit)
at the better of the open and the limit. Slippage (bps, against us; never past a limit)
and commission (per share, with a minimum) are configurable.

Stops (buy: the market trades above the stop; sell: below it). A bar triggers a stop when it
trades through it (buy: high > stop; sell: low < stop) or opens past it. A stop then fills
as a market order: at the stop, or at the open when the bar gapped past it. A stop-limit
becomes a limit order: opened past the stop, it fills in that bar like a limit (at the open
when the open is within the limit, at the limit when the bar trades through it later; a
gap past the limit that never comes back does not fill); triggered inside the bar, it fills
there at the stop only when the stop is strictly better than the limit, otherwise it works as
a limit from the next bar on. A trailing stop starts at the first bar's open and trails the
best price by ``trail_percent`` or ``trail_amount``: each bar is first checked against the
stop the earlier bars set, then the mark ratchets to the bar's high (sell) or low (buy), never
back (within one bar the order of high and low is unknown, so a bar never raises the stop it
is checked against).

Time in force: ``day`` expires when its session ends (for daily bars: after the first bar),
``gtc`` works until filled or cancelled, ``ioc`` gets only the first bar and is cancelled
otherwise, ``opg`` fills only at the open of a session's first bar (a limit: if the open is
within it) and expires otherwise.

Brackets: an entry's two exits (a take-profit limit and a stop-loss stop, both gtc, linked by
``parent_client_order_id`` and one ``oco_group``) are held while the entry works, cancelled
with it (cancelled, expired or rejected), and work only on the bars after the bar the entry
filled on. The first exit to fill cancels the other in the same transaction. When one bar
could fill both (it trades through the take-profit and the stop), the stop-loss is taken to
have filled: the order of high and low within a bar is unknown, so the paper broker assumes
the worse one.

Its state lives in its own ops-store tables (``paper_orders``, ``paper_fills``,
``paper_accounts``), so a second process or a retried job sees the same book, and a second
submit with the same client_order_id returns the first order. ``process_bars()`` advances
working orders against whatever bars the feed has.

Corporate actions (trading_pipeline/trading/corporate_actions.py): positions and cash are the
replay of ``paper_fills`` and the account's applied actions (``corporate_action_events``), so a
split re-shapes a position on its ex-date and a dividend lands in cash on its pay date; working
orders were already put on post-split terms when the action was applied. A symbol delisted
(as recorded for this account) takes no new orders after its date.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import polars as pl
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from trading_pipeline.trading import corporate_actions
from trading_pipeline.trading.brokers.base import (
    BrokerAccount,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
)
from trading_pipeline.trading.model import (
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    to_decimal,
)
from trading_pipeline.trading.orders import OPEN_STATUSES, utcnow
from trading_pipeline.trading.positions import Portfolio
from trading_pipeline.trading.store import OpsStore
from trading_pipeline.trading.store.schema import (
    insert_if_missing,
    paper_accounts,
    paper_fills,
    paper_orders,
)

ZERO = Decimal(0)
PRICE_QUANTUM = Decimal("0.0001")


@runtime_checkable
class BarFeed(Protocol):
    """Where the paper broker sees the market. Bars as in :mod:`trading_pipeline.marketdata.bars`."""

    def bars_after(self, symbol: str, ts: datetime) -> pl.DataFrame:
        """Bars of ``symbol`` whose start ``ts`` is strictly after ``ts``, oldest first."""
        ...

    def last_bar(self, symbol: str) -> dict[str, Any] | None:
        """The latest bar of ``symbol`` as a dict, or None if the symbol has no bars."""
        ...

    def newest_ts(self) -> datetime | None:
        """The start of the newest bar of any symbol (the market clock), None without bars."""
        ...

    def last_closes(self, symbols: Iterable[str] | None = None, as_of: date | str | None = None) -> dict[str, Decimal]:
        """symbol -> last close (as of a session), for ``symbols`` or all; no bars, no entry."""
        ...


class PolarsBarFeed:
    """Bars from an in-memory polars frame: tests and backtests. ``append`` moves time on."""

    def __init__(self, bars: pl.DataFrame | None = None) -> None:
        self.bars = bars if bars is not None else pl.DataFrame()

    def append(self, bars: pl.DataFrame) -> None:
        self.bars = bars if self.bars.is_empty() else pl.concat([self.bars, bars], how="diagonal_relaxed")

    def bars_after(self, symbol: str, ts: datetime) -> pl.DataFrame:
        if self.bars.is_empty():
            return self.bars
        return self.bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") > ts)).sort("ts")

    def last_bar(self, symbol: str) -> dict[str, Any] | None:
        if self.bars.is_empty():
            return None
        rows = self.bars.filter(pl.col("symbol") == symbol).sort("ts").tail(1).to_dicts()
        return rows[0] if rows else None

    def newest_ts(self) -> datetime | None:
        return None if self.bars.is_empty() else self.bars["ts"].max()

    def last_closes(self, symbols: Iterable[str] | None = None, as_of: date | str | None = None) -> dict[str, Decimal]:
        """As :meth:`SqlBarFeed.last_closes`."""
        if self.bars.is_empty():
            return {}
        bars = self.bars if symbols is None else self.bars.filter(pl.col("symbol").is_in(list(symbols)))
        if as_of is not None:
            bars = bars.filter(pl.col("ts") < datetime.fromisoformat(str(as_of)) + timedelta(days=1))
        last = bars.sort("ts").group_by("symbol").agg(pl.col("close").last())
        return {s: to_decimal(c) for s, c in last.iter_rows() if c is not None}


BAR_COLUMNS = "symbol, timeframe, ts, session_date, open, high, low, close, volume"


class SqlBarFeed:
    """A :class:`BarFeed` over a DuckDB database holding the warehouse's bar tables: one set of
    queries for the warehouse (:class:`DuckDBBarFeed`) and the API's serving snapshot
    (``trading_api.snapshot.SnapshotBarFeed``). Subclasses say how to run a query."""

    def __init__(self, timeframe: str = "1d") -> None:
        from trading_pipeline.marketdata.warehouse import bars_table

        self.timeframe = timeframe
        self.table = bars_table(timeframe)

    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def bars_after(self, symbol: str, ts: datetime) -> pl.DataFrame:
        rows = self._rows(f"SELECT {BAR_COLUMNS} FROM {self.table} WHERE symbol = ? AND timeframe = ? AND ts > ? ORDER BY ts",
                          [symbol, self.timeframe, ts])
        return pl.DataFrame(rows) if rows else pl.DataFrame()

    def last_bar(self, symbol: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {BAR_COLUMNS} FROM {self.table} WHERE symbol = ? AND timeframe = ? ORDER BY ts DESC LIMIT 1",
                          [symbol, self.timeframe])
        return rows[0] if rows else None

    def newest_ts(self) -> datetime | None:
        rows = self._rows(f"SELECT max(ts) AS ts FROM {self.table} WHERE timeframe = ?", [self.timeframe])
        return rows[0]["ts"] if rows else None

    def last_closes(self, symbols: Iterable[str] | None = None, as_of: date | str | None = None) -> dict[str, Decimal]:
        """symbol -> last close (as of session ``as_of`` when given), for ``symbols`` or every
        symbol; symbols without bars are left out. The one price source for sizing, risk and
        valuation (docs/decisions.md #13)."""
        sql = f"SELECT symbol, arg_max(close, ts) AS close FROM {self.table} WHERE timeframe = ?"
        params: list[Any] = [self.timeframe]
        if symbols is not None:
            symbols = sorted(set(symbols))
            if not symbols:
                return {}
            sql += " AND symbol IN (SELECT unnest(?::VARCHAR[]))"
            params.append(symbols)
        if as_of is not None:
            sql += " AND session_date <= ?::DATE"
            params.append(str(as_of))
        rows = self._rows(sql + " GROUP BY symbol", params)
        return {r["symbol"]: to_decimal(r["close"]) for r in rows if r["close"] is not None}


class DuckDBBarFeed(SqlBarFeed):
    """Bars from the warehouse, read-only. A DuckDB file is opened per call, so no lock is held
    between calls (a reader's shared lock would block the writers); a DuckLake (the default) is
    opened once and kept, as its readers lock nothing and each query reads the newest snapshot
    (attaching a lake costs ~0.3 s: a CLI order paid it three times)."""

    def __init__(self, path: Path | str, timeframe: str = "1d") -> None:
        from trading_pipeline.marketdata.warehouse import is_lake, location

        super().__init__(timeframe)
        self.path = location(path)  # md:/ducklake: stay strings
        self._keep = is_lake(self.path)
        self._con: Any = None
        self._lock = threading.Lock()

    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        from trading_pipeline.marketdata.warehouse import connect

        with self._lock:
            con = self._con or connect(self.path, read_only=True)
            try:
                rel = con.sql(sql, params=params)
                cols = rel.columns
                return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
            finally:
                if self._keep:
                    self._con = con
                else:
                    con.close()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def market_clock(feed: BarFeed) -> Callable[[], datetime]:
    """'Now' on a market replayed from stored bars: the start of the newest bar the feed has
    (the wall clock while it has none). An order placed then fills on the next bar, the same
    rule the signal orders follow; on the bundled sample (which ends in 2013) the wall clock
    would put every manual order after the last bar there will ever be."""

    def now() -> datetime:
        return feed.newest_ts() or utcnow()

    return now


def paper_clock(settings: Any, feed: BarFeed) -> Callable[[], datetime]:
    """The paper broker's clock for this home: ``TRADING_CLOCK`` = ``market`` or ``wall``;
    ``auto`` (the default) is the market clock when the home's bars come from the sample or
    from files, the wall clock for a live source (alpaca, ib)."""
    mode = settings.clock
    if mode == "auto":
        from trading_pipeline.marketdata.sources.registry import home_source

        source, _why = home_source(settings)
        mode = "market" if source in (None, "sample", "synthetic") else "wall"
    return market_clock(feed) if mode == "market" else utcnow


# ---- the fill rules, as pure functions (the backtest's bracket exits use them too) -------------
def slipped(price: Decimal, side: Side, slippage_bps: Decimal) -> Decimal:
    """``price`` moved ``slippage_bps`` against the order (a buy pays more, a sell gets less)."""
    factor = Decimal(slippage_bps) / Decimal(10000)
    p = price * (1 + factor) if side == Side.BUY else price * (1 - factor)
    return p.quantize(PRICE_QUANTUM)


def limit_fill(side: Side, limit: Decimal, o: Decimal, lo: Decimal, hi: Decimal,
               slippage_bps: Decimal) -> Decimal | None:
    """A working limit order's fill price on a bar (the better of the open and the limit,
    slipped but never past the limit), or None if the bar does not trade through it."""
    if side == Side.BUY and (lo < limit or o <= limit):
        return min(slipped(min(o, limit), side, slippage_bps), limit)
    if side == Side.SELL and (hi > limit or o >= limit):
        return max(slipped(max(o, limit), side, slippage_bps), limit)
    return None


def stop_trigger(side: Side, stop: Decimal, o: Decimal, lo: Decimal, hi: Decimal) -> Decimal | None:
    """The price at which a bar triggers a stop: the open if it opened past the stop, the
    stop if it trades through it later, None if it does neither. A triggered stop fills as
    a market order at this price, slipped."""
    if side == Side.BUY:
        return o if o >= stop else (stop if hi > stop else None)
    return o if o <= stop else (stop if lo < stop else None)


def _session(bar: dict[str, Any]) -> Any:
    return bar.get("session_date") or bar["ts"].date()


class PaperBroker:
    """A simulated broker for one account; see the module docstring for the fill model."""

    name = "paper"
    supports_brackets = True

    def __init__(
        self,
        store: OpsStore,
        feed: BarFeed,
        *,
        account: str = "paper",
        starting_cash: Decimal = Decimal("100000"),
        slippage_bps: Decimal = ZERO,
        commission_per_share: Decimal = ZERO,
        commission_min: Decimal = ZERO,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.feed = feed
        self.account_id = account
        self.slippage_bps = Decimal(slippage_bps)
        self.commission_per_share = Decimal(commission_per_share)
        self.commission_min = Decimal(commission_min)
        self.clock = clock
        with store.transaction() as conn:  # several processes may open a new account at once
            insert_if_missing(conn, paper_accounts, {"account": account},
                              {"starting_cash": starting_cash, "created_at": utcnow()})

    # ---- reading the book --------------------------------------------------------------------
    def _to_broker_order(self, row: Any, fill_rows: list[Any]) -> BrokerOrder:
        return BrokerOrder(
            client_order_id=row.client_order_id,
            broker_order_id=row.broker_order_id,
            symbol=row.symbol,
            side=Side(row.side),
            quantity=row.quantity,
            filled_quantity=row.filled_quantity,
            status=OrderStatus(row.status),
            avg_fill_price=row.avg_fill_price,
            reason=row.reason,
            fills=tuple(
                BrokerFill(f.fill_id, f.client_order_id, f.quantity, f.price, f.commission, f.ts) for f in fill_rows
            ),
        )

    def _load(self, conn: sa.Connection, client_order_id: str) -> BrokerOrder | None:
        row = conn.execute(sa.select(paper_orders).where(paper_orders.c.client_order_id == client_order_id)).first()
        if row is None:
            return None
        frows = conn.execute(
            sa.select(paper_fills).where(paper_fills.c.client_order_id == client_order_id).order_by(paper_fills.c.ts)
        ).all()
        return self._to_broker_order(row, frows)

    def order_status(self, client_order_id: str) -> BrokerOrder | None:
        with self.store.reading() as conn:
            return self._load(conn, client_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        with self.store.reading() as conn:
            rows = conn.execute(
                sa.select(paper_orders)
                .where(
                    paper_orders.c.account == self.account_id,
                    paper_orders.c.status.in_([s.value for s in OPEN_STATUSES]),
                )
                .order_by(paper_orders.c.submitted_at, paper_orders.c.client_order_id)
            ).all()
            return [self._to_broker_order(r, []) for r in rows]

    def _portfolio(self) -> Portfolio:
        """The book: the account's fills and the corporate actions applied to it (splits,
        dividends, symbol changes; trading_pipeline/trading/corporate_actions.py), in time order."""
        with self.store.reading() as conn:
            return corporate_actions.paper_book(conn, self.account_id)

    def positions(self) -> list[BrokerPosition]:
        return [BrokerPosition(p.symbol, p.quantity, p.avg_price) for p in self._portfolio().open_positions()]

    def last_price(self, symbol: str) -> Decimal | None:
        bar = self.feed.last_bar(symbol)
        return to_decimal(bar["close"]) if bar else None

    def account(self) -> BrokerAccount:
        pf = self._portfolio()
        prices = {p.symbol: lp for p in pf.open_positions() if (lp := self.last_price(p.symbol)) is not None}
        equity = pf.equity(prices)
        assert pf.cash is not None
        return BrokerAccount(self.account_id, pf.cash, equity, max(pf.cash, ZERO))

    # ---- changing the book -------------------------------------------------------------------
    def _rejection(self, order: OrderRequest) -> str | None:
        if order.account != self.account_id:
            return f"this paper broker serves account {self.account_id!r}, not {order.account!r}"
        if order.quantity <= 0:
            return f"quantity must be > 0, got {order.quantity}"
        if problem := order.problem():
            return problem
        if self.feed.last_bar(order.symbol) is None:
            return f"unknown symbol {order.symbol!r}: no bars in the feed"
        with self.store.reading() as conn:
            gone = corporate_actions.delisted(conn, self.account_id, order.symbol, self.clock().date())
        if gone is not None:
            return f"{order.symbol} was delisted on {gone}: no new orders (`trading actions list --symbol {order.symbol}`)"
        return None

    def submit(self, order: OrderRequest) -> BrokerOrder:
        existing = self.order_status(order.client_order_id)
        if existing is not None:
            return existing
        reason = self._rejection(order)
        now = self.clock()
        try:
            return self._insert(order, reason, now)
        except IntegrityError:  # a concurrent submit of the same id won (Postgres)
            result = self.order_status(order.client_order_id)
            assert result is not None
            return result

    def _insert(self, order: OrderRequest, reason: str | None, now: datetime) -> BrokerOrder:
        with self.store.transaction() as conn:
            again = self._load(conn, order.client_order_id)  # lost a race to another process
            if again is not None:
                return again
            conn.execute(
                paper_orders.insert().values(
                    client_order_id=order.client_order_id,
                    broker_order_id=f"paper-{uuid.uuid4().hex[:16]}",
                    account=order.account,
                    symbol=order.symbol,
                    side=Side(order.side).value,
                    order_type=OrderType(order.order_type).value,
                    quantity=order.quantity,
                    limit_price=order.limit_price,
                    time_in_force=TimeInForce(order.time_in_force).value,
                    stop_price=order.stop_price,
                    trail_percent=order.trail_percent,
                    trail_amount=order.trail_amount,
                    parent_client_order_id=order.parent_client_order_id,
                    oco_group=order.oco_group,
                    status=(OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED).value,
                    filled_quantity=ZERO,
                    avg_fill_price=None,
                    reason=reason,
                    submitted_at=now,
                    updated_at=now,
                )
            )
            result = self._load(conn, order.client_order_id)
        assert result is not None
        return result

    def _open_row(self, conn: sa.Connection, client_order_id: str, action: str) -> Any:
        # locked (Postgres): a fill committing meanwhile must be seen, not overwritten
        row = conn.execute(
            self.store._lock_rows(sa.select(paper_orders).where(paper_orders.c.client_order_id == client_order_id))
        ).first()
        if row is None:
            raise BrokerError(f"cannot {action} {client_order_id}: unknown order")
        if OrderStatus(row.status) not in OPEN_STATUSES:
            raise BrokerError(f"cannot {action} {client_order_id}: order is {row.status}")
        return row

    def cancel(self, client_order_id: str) -> BrokerOrder:
        with self.store.transaction() as conn:
            self._open_row(conn, client_order_id, "cancel")
            conn.execute(
                paper_orders.update()
                .where(paper_orders.c.client_order_id == client_order_id)
                .values(status=OrderStatus.CANCELLED.value, reason="cancelled by request", updated_at=self.clock())
            )
            # a bracket's exits go with their entry
            self._cancel_children(conn, client_order_id, f"bracket entry {client_order_id} cancelled")
            result = self._load(conn, client_order_id)
        assert result is not None
        return result

    def _cancel_children(self, conn: sa.Connection, parent: str, reason: str) -> None:
        conn.execute(
            paper_orders.update()
            .where(paper_orders.c.parent_client_order_id == parent,
                   paper_orders.c.status.in_([st.value for st in OPEN_STATUSES]))
            .values(status=OrderStatus.CANCELLED.value, reason=reason, updated_at=self.clock())
        )

    def modify(
        self,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_percent: Decimal | None = None,
        trail_amount: Decimal | None = None,
        conn: sa.Connection | None = None,
    ) -> BrokerOrder:
        """New terms for a working order, used from the next bar after now on (earlier bars are
        not replayed against them; a trailing stop starts trailing afresh). ``conn``: do it in
        the caller's transaction (the ops store's order update, so both change or neither)."""
        if conn is None:
            with self.store.transaction() as own:
                return self.modify(client_order_id, quantity=quantity, limit_price=limit_price, stop_price=stop_price,
                                   trail_percent=trail_percent, trail_amount=trail_amount, conn=own)
        row = self._open_row(conn, client_order_id, "modify")
        values: dict[str, Any] = {"updated_at": max(self.clock(), row.updated_at + timedelta(microseconds=1))}
        if quantity is not None:
            if quantity <= row.filled_quantity:
                raise BrokerError(f"cannot modify {client_order_id}: quantity {quantity} <= filled {row.filled_quantity}")
            values["quantity"] = quantity
        if limit_price is not None:
            if row.order_type not in (OrderType.LIMIT.value, OrderType.STOP_LIMIT.value):
                raise BrokerError(f"cannot modify {client_order_id}: a {row.order_type} order has no limit price")
            if limit_price <= 0:
                raise BrokerError(f"cannot modify {client_order_id}: limit price must be > 0")
            values["limit_price"] = limit_price
        if stop_price is not None:
            if row.order_type not in (OrderType.STOP.value, OrderType.STOP_LIMIT.value):
                raise BrokerError(f"cannot modify {client_order_id}: a {row.order_type} order has no stop price")
            values["stop_price"] = stop_price
        if trail_percent is not None or trail_amount is not None:
            if row.order_type != OrderType.TRAILING_STOP.value:
                raise BrokerError(f"cannot modify {client_order_id}: a {row.order_type} order has no trail")
            values["trail_percent"], values["trail_amount"] = trail_percent, trail_amount
            values["trail_mark"] = values["current_stop"] = None
        conn.execute(paper_orders.update().where(paper_orders.c.client_order_id == client_order_id).values(**values))
        result = self._load(conn, client_order_id)
        assert result is not None
        return result

    # ---- the market moves --------------------------------------------------------------------
    def _slipped(self, price: Decimal, side: Side) -> Decimal:
        return slipped(price, side, self.slippage_bps)

    def commission(self, quantity: Decimal) -> Decimal:
        return max(quantity * self.commission_per_share, self.commission_min)

    def _limit_fill(self, side: Side, limit: Decimal, o: Decimal, lo: Decimal, hi: Decimal) -> Decimal | None:
        return limit_fill(side, limit, o, lo, hi, self.slippage_bps)

    _trigger = staticmethod(stop_trigger)

    @staticmethod
    def _trail_stop(row: Any, side: Side, mark: Decimal) -> Decimal:
        if row.trail_amount is not None:
            stop = mark + row.trail_amount if side == Side.BUY else mark - row.trail_amount
        else:
            pct = row.trail_percent / Decimal(100)
            stop = mark * (1 + pct) if side == Side.BUY else mark * (1 - pct)
        return stop.quantize(PRICE_QUANTUM)

    def _opens_session(self, row: Any, bar: dict[str, Any]) -> bool:
        """Whether ``bar`` is the first bar of its session (every daily bar is)."""
        if bar.get("timeframe", "1d") == "1d":
            return True
        session = _session(bar)
        earlier = self.feed.bars_after(row.symbol, bar["ts"] - timedelta(days=1)).to_dicts()
        return not any(_session(b) == session and b["ts"] < bar["ts"] for b in earlier)

    def _match(self, row: Any, bars: list[dict[str, Any]]) -> Match:
        """Decide the fate of one working order (see the module docstring for the rules)."""
        side = Side(row.side)
        if not bars:
            return Match("wait")
        otype = OrderType(row.order_type)
        tif = TimeInForce(row.time_in_force)
        first_session = _session(bars[0])
        if tif == TimeInForce.OPG:
            bar = bars[0]
            if not self._opens_session(row, bar):
                return Match("expire", bar, reason=f"opg: first bar after the order ({bar['ts']}) is not a session open")
            o = to_decimal(bar["open"])
            if otype == OrderType.MARKET:
                return Match("fill", bar, self._slipped(o, side))
            price = self._limit_fill(side, row.limit_price, o, o, o)  # the opening price only
            if price is not None:
                return Match("fill", bar, price)
            return Match("expire", bar, reason=f"opg limit {row.limit_price} not reached at the open {o} of {bar['ts']}")
        if otype == OrderType.MARKET:
            return Match("fill", bars[0], self._slipped(to_decimal(bars[0]["open"]), side))
        mark: Decimal | None = None  # replayed from the first bar on every pass: no stored state is trusted
        stop: Decimal | None = row.stop_price
        # a stop-limit triggered before a modification stays triggered
        triggered_at = row.triggered_at if row.updated_at > row.submitted_at else None
        for i, bar in enumerate(bars):
            if tif == TimeInForce.IOC and i > 0:
                return Match("expire", bar, reason=f"ioc limit not reached by {bar['ts']}")
            if tif == TimeInForce.DAY and _session(bar) != first_session:
                return Match("expire", bar, reason=self._unfilled(otype, triggered_at, bar))
            o, lo, hi = to_decimal(bar["open"]), to_decimal(bar["low"]), to_decimal(bar["high"])
            if otype == OrderType.LIMIT:
                price = self._limit_fill(side, row.limit_price, o, lo, hi)
                if price is not None:
                    return Match("fill", bar, price)
                continue
            if otype == OrderType.STOP_LIMIT and triggered_at is not None:
                price = self._limit_fill(side, row.limit_price, o, lo, hi)
                if price is not None:
                    return Match("fill", bar, price, triggered_at=triggered_at)
                continue
            if otype == OrderType.TRAILING_STOP:
                if i == 0:
                    mark = o  # it starts working at the first bar's open
                assert mark is not None
                stop = self._trail_stop(row, side, mark)
            assert stop is not None
            trigger = self._trigger(side, stop, o, lo, hi)
            if trigger is None:
                if otype == OrderType.TRAILING_STOP:  # ratchet for the next bar, never back
                    mark = min(mark, lo) if side == Side.BUY else max(mark, hi)  # type: ignore[type-var]
                continue
            if otype in (OrderType.STOP, OrderType.TRAILING_STOP):
                return Match("fill", bar, self._slipped(trigger, side), mark=mark, stop=stop, triggered_at=bar["ts"])
            # stop_limit: a limit from the trigger on
            triggered_at = bar["ts"]
            limit: Decimal = row.limit_price
            if trigger == o:  # opened past the stop: the rest of the bar is a limit order's
                price = self._limit_fill(side, limit, o, lo, hi)
            else:  # crossed the stop inside the bar: traded at the stop, fills if that beats the limit
                better = stop < limit if side == Side.BUY else stop > limit
                price = min(self._slipped(stop, side), limit) if side == Side.BUY else max(self._slipped(stop, side), limit)
                price = price if better else None
            if price is not None:
                return Match("fill", bar, price, triggered_at=triggered_at)
        last = bars[-1]
        if tif == TimeInForce.IOC or (tif == TimeInForce.DAY and last.get("timeframe") == "1d"):
            # its only bar (or whole session) passed without a fill
            return Match("expire", last, reason=self._unfilled(otype, triggered_at, last, tif))
        if otype == OrderType.TRAILING_STOP:
            assert mark is not None
            stop = self._trail_stop(row, side, mark)
        return Match("wait", mark=mark, stop=stop, triggered_at=triggered_at)

    @staticmethod
    def _unfilled(otype: OrderType, triggered_at: datetime | None, bar: dict[str, Any],
                  tif: TimeInForce = TimeInForce.DAY) -> str:
        if otype == OrderType.LIMIT or triggered_at is not None:
            return f"{tif.value} limit not reached by {bar['ts']}"
        return f"{tif.value} stop not triggered by {bar['ts']}"

    def process_bars(self) -> list[BrokerOrder]:
        """Fill or expire working orders against the bars now available; returns those changed."""
        changed: list[BrokerOrder] = []
        groups_done: set[str] = set()
        for open_order in self.open_orders():
            with self.store.reading() as conn:
                row = conn.execute(
                    sa.select(paper_orders).where(paper_orders.c.client_order_id == open_order.client_order_id)
                ).first()
            if row.parent_client_order_id is not None:
                changed += self._process_exit(row, groups_done)
                continue
            # a modified order works on its new terms from the first bar after the modification
            bars = self.feed.bars_after(row.symbol, max(row.submitted_at, row.updated_at)).to_dicts()
            m = self._match(row, bars)
            action, bar, price = m.action, m.bar, m.price
            if action == "wait" or bar is None:
                self._remember(row, m)
                continue
            with self.store.transaction() as conn:
                cur = conn.execute(
                    self.store._lock_rows(
                        sa.select(paper_orders).where(paper_orders.c.client_order_id == row.client_order_id)
                    )
                ).first()
                if OrderStatus(cur.status) not in OPEN_STATUSES or cur.updated_at != row.updated_at:
                    continue  # another process got there first, or it was modified: next pass
                now = self.clock()
                if action == "expire":
                    status = OrderStatus.CANCELLED if row.time_in_force == TimeInForce.IOC.value else OrderStatus.EXPIRED
                    conn.execute(
                        paper_orders.update()
                        .where(paper_orders.c.client_order_id == row.client_order_id)
                        .values(status=status.value, reason=m.reason, updated_at=now)
                    )
                else:
                    assert price is not None
                    self._fill(conn, row, cur, m, now)
                result = self._load(conn, row.client_order_id)
            if result is not None:
                changed.append(result)
        return changed

    def _fill(self, conn: sa.Connection, row: Any, cur: Any, m: Match, now: datetime) -> None:
        """Book the fill of the rest of ``cur`` (``row`` as matched) on ``m.bar`` at ``m.price``."""
        bar, price = m.bar, m.price
        assert bar is not None and price is not None
        qty = cur.quantity - cur.filled_quantity
        conn.execute(
            paper_fills.insert().values(
                fill_id=f"{row.client_order_id}:{bar['ts'].isoformat()}",
                client_order_id=row.client_order_id,
                account=row.account,
                symbol=row.symbol,
                side=row.side,
                quantity=qty,
                price=price,
                commission=self.commission(qty),
                bar_ts=bar["ts"],
                ts=bar["ts"],
            )
        )
        conn.execute(
            paper_orders.update()
            .where(paper_orders.c.client_order_id == row.client_order_id)
            .values(
                status=OrderStatus.FILLED.value,
                filled_quantity=cur.quantity,
                avg_fill_price=price,
                reason=f"filled at {price} on bar {bar['ts']}",
                updated_at=now,
                **self._state(row, m),
            )
        )

    def _process_exit(self, row: Any, groups_done: set[str]) -> list[BrokerOrder]:
        """A bracket's exits (see the module docstring): held until the entry has filled, then
        worked on the bars after the entry's fill bar; the first exit to fill cancels the others
        of its one-cancels-other group in the same transaction. If both could fill on the same bar
        (the order of high and low within a bar is unknown), the stop-loss is taken to have
        filled first: the conservative reading."""
        group = row.oco_group or row.client_order_id
        if group in groups_done:
            return []
        groups_done.add(group)
        open_values = [st.value for st in OPEN_STATUSES]
        with self.store.reading() as conn:
            parent = conn.execute(
                sa.select(paper_orders).where(paper_orders.c.client_order_id == row.parent_client_order_id)
            ).first()
            members = [row] if row.oco_group is None else conn.execute(
                sa.select(paper_orders)
                .where(paper_orders.c.oco_group == row.oco_group, paper_orders.c.status.in_(open_values))
                .order_by(paper_orders.c.client_order_id)
            ).all()
            entry_bar = conn.execute(
                sa.select(sa.func.max(paper_fills.c.bar_ts)).where(paper_fills.c.client_order_id == row.parent_client_order_id)
            ).scalar()
        parent_status = OrderStatus(parent.status) if parent is not None else OrderStatus.CANCELLED
        if parent_status in OPEN_STATUSES:
            return []  # held: an exit is active only once its entry has filled
        ids = [r.client_order_id for r in members]
        if parent_status != OrderStatus.FILLED:
            with self.store.transaction() as conn:
                conn.execute(
                    paper_orders.update()
                    .where(paper_orders.c.client_order_id.in_(ids), paper_orders.c.status.in_(open_values))
                    .values(status=OrderStatus.CANCELLED.value, updated_at=self.clock(),
                            reason=f"bracket entry {row.parent_client_order_id} is {parent_status.value}")
                )
                return [bo for i in ids if (bo := self._load(conn, i)) is not None]
        fills = []
        for r in members:
            start = max(r.submitted_at, r.updated_at, entry_bar or r.submitted_at)
            m = self._match(r, self.feed.bars_after(r.symbol, start).to_dicts())
            if m.action == "fill" and m.bar is not None:
                fills.append((m.bar["ts"], 0 if OrderType(r.order_type).is_stop else 1, r.client_order_id, r, m))
            elif m.action == "wait":
                self._remember(r, m)
        if not fills:
            return []  # exits are gtc: they never expire
        _ts, _rank, winner_id, winner, m = min(fills, key=lambda f: f[:3])
        with self.store.transaction() as conn:
            cur = conn.execute(
                self.store._lock_rows(sa.select(paper_orders).where(paper_orders.c.client_order_id == winner_id))
            ).first()
            if OrderStatus(cur.status) not in OPEN_STATUSES or cur.updated_at != winner.updated_at:
                return []  # another process got there first, or it was modified: next pass
            self._fill(conn, winner, cur, m, self.clock())
            others = [i for i in ids if i != winner_id]
            if others:
                conn.execute(
                    paper_orders.update()
                    .where(paper_orders.c.client_order_id.in_(others), paper_orders.c.status.in_(open_values))
                    .values(status=OrderStatus.CANCELLED.value, updated_at=self.clock(),
                            reason=f"one-cancels-other: {winner_id} filled")
                )
            return [bo for i in ids if (bo := self._load(conn, i)) is not None]

    @staticmethod
    def _state(row: Any, m: Match) -> dict[str, Any]:
        """The paper book's memory of a working stop: its mark, current stop and trigger time."""
        if row.order_type == OrderType.TRAILING_STOP.value:
            return {"trail_mark": m.mark, "current_stop": m.stop, "triggered_at": m.triggered_at}
        if row.order_type in (OrderType.STOP.value, OrderType.STOP_LIMIT.value):
            return {"triggered_at": m.triggered_at}
        return {}

    def _remember(self, row: Any, m: Match) -> None:
        """Record a waiting stop's state when it changed (a trailing stop's ratchet, a
        stop-limit's trigger), so the book shows where a working stop stands."""
        values = self._state(row, m)
        if not values or all(getattr(row, k) == v for k, v in values.items()):
            return
        with self.store.transaction() as conn:
            conn.execute(
                paper_orders.update()
                .where(paper_orders.c.client_order_id == row.client_order_id,
                       paper_orders.c.status.in_([s.value for s in OPEN_STATUSES]))
                .values(**values)
            )

    sync = process_bars


@dataclass(frozen=True)
class Match:
    """The fate of one working order on the bars so far: ``fill`` (on ``bar`` at ``price``),
    ``expire`` (``reason``) or ``wait``; with a stop's state as of the last bar seen."""

    action: str
    bar: dict[str, Any] | None = None
    price: Decimal | None = None
    reason: str = ""
    mark: Decimal | None = None
    stop: Decimal | None = None
    triggered_at: datetime | None = None
