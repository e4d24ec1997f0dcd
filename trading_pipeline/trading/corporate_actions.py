"""Corporate actions applied to accounts and backtests: splits, dividends, symbol changes, delistings.

Why: bars are stored raw (docs/decisions.md #12), so a position of 100 shares bought at 100
before a 2-for-1 split would be worth half as much at the first post-split close unless it
becomes 200 shares at 50 on the ex-date. The actions themselves live in the warehouse
(``raw.corporate_actions``, :mod:`trading_pipeline.marketdata.corporate_actions`); this module
says what they do to a book, once:

* the arithmetic, as pure functions used by the paper broker's book (:func:`replay`) and by the
  backtest (``backtest/engine.py``): :func:`split_position` (quantity x ratio, average price /
  ratio: the value is unchanged), :func:`split_price` (an order's limit/stop / ratio),
  :func:`dividend_cash` (quantity x amount: a long is credited, a short pays), :func:`move_position`
  (a symbol change);
* :func:`apply_actions`: for each PAPER account and each due action (a split, symbol change or
  delisting on its ex-date, a dividend on its pay date, the ex-date when it has none), one row in
  the ops store's ``corporate_action_events`` (unique per account and action: applying twice, a
  re-run or a restart changes nothing), and in the same transaction the working orders placed
  before the ex-date adjusted (in the paper book and in our ``orders``, each with an order event)
  and our store's positions and cash brought in line. The paper broker derives its positions and
  cash from ``paper_fills`` plus these rows (:func:`replay`), so the adjustment is part of the
  book it reports, not a side table.

A dividend pays on the shares held when the ex-date opened (fills before it), whatever is held on
the pay date. A delisting leaves the position as it is and records a warning (the event's note):
there is no price to close it at.

Live brokers (Alpaca, Interactive Brokers) adjust positions and open orders themselves, so
:func:`apply_actions` is given paper accounts only (:func:`paper_and_live`): for a live account
nothing is recorded and nothing adjusted, so nothing is adjusted twice. Our store's own view of a
live account's positions is not re-shaped here either; the order job's reconciliation check shows
the split's difference until it is booked from the broker.

Known limit: a fill on a bar BEFORE an ex-date that is booked after the action was applied (bars
arriving days late) is in the paper book's replay in the right order, but our store's position,
maintained fill by fill, takes it after the split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from trading_pipeline.trading.model import Side, to_decimal
from trading_pipeline.trading.orders import OPEN_STATUSES, utcnow
from trading_pipeline.trading.positions import Fill, Portfolio, Position
from trading_pipeline.trading.store import OpsStore
from trading_pipeline.trading.store.schema import (
    _insert,
    accounts,
    corporate_action_events,
    fills,
    order_events,
    orders,
    paper_accounts,
    paper_fills,
    paper_orders,
    positions,
)

ZERO = Decimal(0)
PRICE_QUANTUM = Decimal("0.0001")  # as the paper broker's prices
KINDS = ("split", "symbol_change", "dividend", "delisting")  # applied in this order on one date


# ---- the actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """One stored corporate action (a row of ``raw.corporate_actions``)."""

    symbol: str
    ex_date: date
    kind: str
    ratio: Decimal | None = None
    amount: Decimal | None = None
    new_symbol: str | None = None
    pay_date: date | None = None

    @property
    def key(self) -> str:
        """What makes it unique: symbol, ex-date and kind (as the warehouse keys it)."""
        return f"{self.symbol}:{self.ex_date.isoformat()}:{self.kind}"

    @property
    def effective_date(self) -> date:
        """When it changes the book: a dividend's pay date (its ex-date if unknown), else the ex-date."""
        return (self.pay_date or self.ex_date) if self.kind == "dividend" else self.ex_date

    def due(self, as_of: date) -> bool:
        return self.effective_date <= as_of

    def describe(self) -> str:
        if self.kind == "split":
            return f"{self.ratio:g}-for-1 split of {self.symbol} on {self.ex_date}"
        if self.kind == "dividend":
            return f"dividend {self.amount} per share of {self.symbol} (ex {self.ex_date}, paid {self.effective_date})"
        if self.kind == "symbol_change":
            return f"{self.symbol} renamed {self.new_symbol} on {self.ex_date}"
        return f"{self.symbol} delisted on {self.ex_date}"

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Action:
        if r["kind"] not in KINDS:
            raise ValueError(f"unknown corporate action kind {r['kind']!r}; one of {', '.join(KINDS)}")
        ratio, amount = r.get("ratio"), r.get("amount")
        if r["kind"] == "split" and (ratio is None or to_decimal(ratio) <= 0):
            raise ValueError(f"split of {r['symbol']} on {r['ex_date']} has no ratio > 0: fix it in raw.corporate_actions")
        if r["kind"] == "dividend" and amount is None:
            raise ValueError(f"dividend of {r['symbol']} on {r['ex_date']} has no amount: fix it in raw.corporate_actions")
        return cls(
            symbol=r["symbol"], ex_date=r["ex_date"], kind=r["kind"],
            ratio=None if ratio is None else to_decimal(ratio),
            amount=None if amount is None else to_decimal(amount),
            new_symbol=r.get("new_symbol"), pay_date=r.get("pay_date"),
        )


def ordered(actions: Iterable[Action]) -> list[Action]:
    """By the date they change the book, then ex-date, kind (splits first), symbol."""
    return sorted(actions, key=lambda a: (a.effective_date, a.ex_date, KINDS.index(a.kind), a.symbol))


def actions_from_rows(rows: Iterable[dict[str, Any]]) -> list[Action]:
    return ordered(Action.from_row(r) for r in rows)


def read_actions(con: Any, symbols: Sequence[str] | None = None) -> list[Action]:
    """The warehouse's stored actions (none before the first load), for ``symbols`` or all."""
    from trading_pipeline.marketdata.corporate_actions import stored_actions

    df = stored_actions(con)
    if symbols is not None:
        df = df.filter(df["symbol"].is_in(list(symbols)))
    return actions_from_rows(df.to_dicts())


def load_actions(warehouse_path: Path | str) -> list[Action]:
    """:func:`read_actions` from the warehouse at ``warehouse_path``, opened read-only."""
    from trading_pipeline.marketdata import warehouse as wh

    if not wh.exists(warehouse_path):
        return []
    con = wh.connect(warehouse_path, read_only=True)
    try:
        return read_actions(con)
    finally:
        con.close()


# ---- the arithmetic: one definition, for the paper book and the backtest ---------------------
def split_position(position: Position, ratio: Decimal) -> None:
    """A split on ``position``: quantity x ratio, average price / ratio (its cost is unchanged)."""
    if position.quantity != 0:
        position.quantity *= ratio
        position.avg_price /= ratio


def split_price(price: Decimal | None, ratio: Decimal) -> Decimal | None:
    """An order's limit or stop price after a split (to the paper broker's price quantum)."""
    return None if price is None else (price / ratio).quantize(PRICE_QUANTUM)


def dividend_cash(quantity: Decimal, amount: Decimal) -> Decimal:
    """Cash a dividend moves for a signed position: a long is paid, a short pays it."""
    return quantity * amount


def move_position(pf: Portfolio, old: str, new: str) -> None:
    """A symbol change: the position (quantity, cost, realized P&L) continues under ``new``."""
    p = pf.positions.pop(old, None)
    if p is None:
        return
    q = pf.positions.get(new)
    if q is None or q.quantity == 0:
        pf.positions[new] = Position(pf.account, new, p.quantity, p.avg_price, p.realized_pnl + (q.realized_pnl if q else ZERO))
    else:  # already holding the new symbol: one position at the combined cost
        total = p.quantity + q.quantity
        q.avg_price = ZERO if total == 0 else (p.quantity * p.avg_price + q.quantity * q.avg_price) / total
        q.quantity, q.realized_pnl = total, q.realized_pnl + p.realized_pnl


@dataclass(frozen=True)
class Applied:
    """One recorded action as the book replays it (a ``corporate_action_events`` row)."""

    key: str
    symbol: str
    kind: str
    ex_date: date
    effective_date: date
    ratio: Decimal | None
    new_symbol: str | None
    cash_delta: Decimal

    @classmethod
    def from_row(cls, r: Any) -> Applied:
        return cls(r.action_key, r.symbol, r.kind, r.ex_date, r.effective_date, r.ratio, r.new_symbol, r.cash_delta)


def start_of(d: date) -> datetime:
    """A session date's first instant: daily bars start here, so fills at or after it are post-action."""
    return datetime.combine(d, time.min)


def apply_to(pf: Portfolio, ev: Applied) -> None:
    """One recorded action on a portfolio (a delisting changes nothing)."""
    if ev.kind == "split":
        assert ev.ratio is not None
        if ev.symbol in pf.positions:
            split_position(pf.positions[ev.symbol], ev.ratio)
    elif ev.kind == "symbol_change":
        assert ev.new_symbol is not None
        move_position(pf, ev.symbol, ev.new_symbol)
    elif ev.kind == "dividend":
        assert pf.cash is not None
        pf.cash += ev.cash_delta


def replay(account: str, starting_cash: Decimal, fill_rows: Iterable[Fill], events: Iterable[Applied],
           before: datetime | None = None) -> Portfolio:
    """The book from its fills and its recorded actions, in time order: an action takes effect at
    the start of its date (a split or symbol change on the ex-date, a dividend's cash on the pay
    date), before that day's fills. ``before``: only what happened before that instant."""
    items: list[tuple[datetime, int, str, Any]] = [(f.ts, 1, f.fill_id, f) for f in fill_rows if f.account == account]
    for ev in events:
        items.append((start_of(ev.effective_date), 0, f"{KINDS.index(ev.kind)}:{ev.key}", ev))
    pf = Portfolio(account=account, starting_cash=starting_cash)
    for ts, _rank, _key, item in sorted(items, key=lambda x: x[:3]):
        if before is not None and ts >= before:
            break
        if isinstance(item, Applied):
            apply_to(pf, item)
        else:
            pf.apply_fill(item.symbol, item.side, item.quantity, item.price, item.commission)
    return pf


def recorded(conn: Connection, account: str) -> list[Applied]:
    rows = conn.execute(
        sa.select(corporate_action_events).where(corporate_action_events.c.account == account)
        .order_by(corporate_action_events.c.id)
    ).all()
    return [Applied.from_row(r) for r in rows]


def paper_book(conn: Connection, account: str, before: datetime | None = None) -> Portfolio:
    """The paper broker's book for ``account``: ``paper_fills`` plus the recorded actions."""
    start = conn.execute(
        sa.select(paper_accounts.c.starting_cash).where(paper_accounts.c.account == account)
    ).scalar()
    rows = conn.execute(sa.select(paper_fills).where(paper_fills.c.account == account)).all()
    book_fills = [Fill(r.fill_id, r.client_order_id, r.account, r.symbol, Side(r.side), r.quantity, r.price,
                       r.commission, r.ts) for r in rows]
    return replay(account, start if start is not None else ZERO, book_fills, recorded(conn, account), before)


# ---- applying actions to paper accounts ------------------------------------------------------
@dataclass(frozen=True)
class ActionResult:
    """What applying one action did to one account (``status``: applied or already_applied)."""

    account: str
    key: str
    kind: str
    symbol: str
    status: str
    quantity_before: Decimal = ZERO
    avg_price_before: Decimal = ZERO
    quantity_after: Decimal = ZERO
    avg_price_after: Decimal = ZERO
    cash_delta: Decimal = ZERO
    orders_adjusted: int = 0
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}


def paper_and_live(accts: Iterable[Any]) -> tuple[list[str], list[str]]:
    """Account names (objects with ``name`` and ``broker``) split into paper ones, which
    :func:`apply_actions` adjusts, and live ones, whose broker adjusts them itself."""
    paper, live = [], []
    for a in accts:
        (paper if a.broker == "paper" else live).append(a.name)
    return paper, live


def apply_actions(store: OpsStore, actions: Iterable[Action], as_of: date, accounts_: Sequence[str],
                  now: datetime | None = None) -> list[ActionResult]:
    """Apply every action due by ``as_of`` to each PAPER account in ``accounts_`` (module
    docstring); one transaction per account and action. Returns what each did; an action
    recorded before comes back ``already_applied`` and changes nothing. Actions in symbols an
    account never filled or ordered are passed over (so a universe's years of dividends cost
    nothing to an account that never traded them)."""
    due = [a for a in ordered(actions) if a.due(as_of)]
    out: list[ActionResult] = []
    for account in accounts_:
        with store.reading() as conn:
            done = {r.key for r in recorded(conn, account)}
            touched = _touched(conn, account)
        for action in due:
            if action.symbol not in touched:
                continue  # never held nor ordered here: nothing to adjust (re-checked each run, cheaply)
            if action.kind == "symbol_change" and action.new_symbol:
                touched.add(action.new_symbol)  # the position lives on under the new symbol
            if action.key in done:
                out.append(ActionResult(account, action.key, action.kind, action.symbol, "already_applied"))
                continue
            with store.transaction() as conn:
                out.append(_apply_one(store, conn, account, action, now or utcnow()))
    return out


def _touched(conn: Connection, account: str) -> set[str]:
    """The symbols the paper account ever filled or ordered, or moved a position to (a recorded
    symbol change): the only ones an action can change."""
    filled = conn.execute(sa.select(paper_fills.c.symbol).where(paper_fills.c.account == account).distinct()).scalars()
    ordered_ = conn.execute(sa.select(paper_orders.c.symbol).where(paper_orders.c.account == account).distinct()).scalars()
    ev = corporate_action_events
    renamed = conn.execute(sa.select(ev.c.new_symbol).where(
        ev.c.account == account, ev.c.kind == "symbol_change").distinct()).scalars()
    return set(filled) | set(ordered_) | set(renamed)


def _apply_one(store: OpsStore, conn: Connection, account: str, action: Action, now: datetime) -> ActionResult:
    ex = start_of(action.ex_date)
    held = paper_book(conn, account, before=ex).positions.get(action.symbol) or Position(account, action.symbol)
    q0, p0 = held.quantity, held.avg_price
    q1, p1, cash, note = q0, p0, ZERO, None
    if action.kind == "split":
        assert action.ratio is not None
        after = Position(account, action.symbol, q0, p0)
        split_position(after, action.ratio)
        q1, p1 = after.quantity, after.avg_price
    elif action.kind == "dividend":
        assert action.amount is not None
        cash = dividend_cash(q0, action.amount)
    elif action.kind == "delisting":
        note = (f"{action.symbol} delisted on {action.ex_date}: the position of {q0} is left as it is (no price to "
                "close it at); settle it with the broker" if q0 != 0 else f"{action.symbol} delisted on {action.ex_date}")
    stmt = _insert(conn, corporate_action_events).values(
        account=account, action_key=action.key, symbol=action.symbol, ex_date=action.ex_date, kind=action.kind,
        ratio=action.ratio, amount=action.amount, new_symbol=action.new_symbol,
        effective_date=action.effective_date, quantity_before=q0, avg_price_before=p0, quantity_after=q1,
        avg_price_after=p1, cash_delta=cash, orders_adjusted=0, note=note, applied_at=now,
    )
    if not conn.execute(stmt.on_conflict_do_nothing(index_elements=["account", "action_key"])).rowcount:
        return ActionResult(account, action.key, action.kind, action.symbol, "already_applied")  # lost a race
    adjusted = _adjust_orders(store, conn, account, action, now) if action.kind in ("split", "symbol_change") else 0
    if adjusted:
        conn.execute(corporate_action_events.update().where(
            corporate_action_events.c.account == account, corporate_action_events.c.action_key == action.key,
        ).values(orders_adjusted=adjusted))
    _follow_in_store(store, conn, account, action, cash, now)
    return ActionResult(account, action.key, action.kind, action.symbol, "applied", q0, p0, q1, p1, cash, adjusted, note)


def _order_terms(row: Any, action: Action) -> dict[str, Any]:
    """A working order's new terms: a split scales quantities up and prices down; a symbol
    change only renames. ``trail_percent`` is a ratio and stays."""
    if action.kind == "symbol_change":
        return {"symbol": action.new_symbol}
    r = action.ratio
    assert r is not None
    terms = {"quantity": row.quantity * r, "filled_quantity": row.filled_quantity * r,
             "limit_price": split_price(row.limit_price, r), "stop_price": split_price(row.stop_price, r),
             "trail_amount": split_price(row.trail_amount, r)}
    if hasattr(row, "trail_mark"):
        terms |= {"trail_mark": split_price(row.trail_mark, r), "current_stop": split_price(row.current_stop, r)}
    return terms


def _adjust_orders(store: OpsStore, conn: Connection, account: str, action: Action, now: datetime) -> int:
    """The account's working orders in the symbol placed before the ex-date (by the paper book's
    clock, the market's), on new terms, in the paper book and in our orders (each with an order
    event). The paper book's copy works again from the ex-date's first bar: earlier bars were at
    the old prices."""
    ex = start_of(action.ex_date)
    open_values = [s.value for s in OPEN_STATUSES]
    book = conn.execute(store._lock_rows(sa.select(paper_orders).where(
        paper_orders.c.account == account, paper_orders.c.symbol == action.symbol,
        paper_orders.c.status.in_(open_values), paper_orders.c.submitted_at < ex,
    ))).all()
    for row in book:
        updated = max(row.updated_at + timedelta(microseconds=1), ex - timedelta(microseconds=1))
        conn.execute(paper_orders.update().where(paper_orders.c.client_order_id == row.client_order_id)
                     .values(**_order_terms(row, action), updated_at=updated))
    ids = [r.client_order_id for r in book]  # the paper book's clock says which were placed before
    ours = conn.execute(store._lock_rows(sa.select(orders).where(
        orders.c.client_order_id.in_(ids), orders.c.status.in_(open_values),
    ))).all() if ids else []
    for row in ours:
        terms = _order_terms(row, action)
        conn.execute(orders.update().where(orders.c.client_order_id == row.client_order_id)
                     .values(**terms, updated_at=now))
        change = ", ".join(f"{k} {getattr(row, k)} -> {v}" for k, v in terms.items()
                           if v is not None and getattr(row, k) != v)
        conn.execute(order_events.insert().values(
            client_order_id=row.client_order_id, ts=now, kind="corporate_action",
            from_status=row.status, to_status=row.status, reason=f"{action.describe()}: {change}",
        ))
    return len(ids)


def _follow_in_store(store: OpsStore, conn: Connection, account: str, action: Action, cash: Decimal,
                     now: datetime) -> None:
    """Our store's view of the account (``positions``, ``accounts.cash``) after the action: the
    touched symbols' positions replayed from our fills and the recorded actions (the same
    :func:`replay` the paper book uses), a dividend's cash added."""
    acct = conn.execute(store._lock_rows(sa.select(accounts).where(accounts.c.account == account))).first()
    if acct is None:
        return  # nothing booked for this account in our store yet
    if cash:
        conn.execute(accounts.update().where(accounts.c.account == account).values(cash=acct.cash + cash, updated_at=now))
    if action.kind not in ("split", "symbol_change"):
        return
    rows = conn.execute(sa.select(fills).where(fills.c.account == account)).all()
    ours = [Fill(r.fill_id, r.client_order_id, r.account, r.symbol, Side(r.side), r.quantity, r.price, r.commission, r.ts)
            for r in rows]
    pf = replay(account, acct.starting_cash, ours, recorded(conn, account))
    for sym in {action.symbol, action.new_symbol} - {None}:
        p = pf.positions.get(sym) or Position(account, sym)
        values = {"quantity": p.quantity, "avg_price": p.avg_price, "realized_pnl": p.realized_pnl, "updated_at": now}
        exists = conn.execute(sa.select(positions.c.symbol).where(
            positions.c.account == account, positions.c.symbol == sym)).first()
        if exists:
            conn.execute(positions.update().where(positions.c.account == account, positions.c.symbol == sym).values(**values))
        elif p.quantity != 0:
            conn.execute(positions.insert().values(account=account, symbol=sym, **values))


def applied_events(store: OpsStore, account: str | None = None) -> list[dict[str, Any]]:
    """The recorded rows (all accounts, or one), oldest first: for the CLI and tests."""
    q = sa.select(corporate_action_events).order_by(corporate_action_events.c.id)
    if account:
        q = q.where(corporate_action_events.c.account == account)
    with store.reading() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def delisted(conn: Connection, account: str, symbol: str, on: date) -> date | None:
    """The date ``symbol`` was delisted for ``account`` if that is on or before ``on`` (recorded)."""
    return conn.execute(sa.select(sa.func.min(corporate_action_events.c.ex_date)).where(
        corporate_action_events.c.account == account, corporate_action_events.c.symbol == symbol,
        corporate_action_events.c.kind == "delisting", corporate_action_events.c.ex_date <= on,
    )).scalar()

