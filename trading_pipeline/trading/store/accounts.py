"""Fills, accounts, positions and daily equity marks in the ops store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from trading_pipeline.trading.brokers.base import BrokerFill
from trading_pipeline.trading.model import Side
from trading_pipeline.trading.orders import OPEN_STATUSES, Order, utcnow
from trading_pipeline.trading.positions import Fill, Portfolio, Position
from trading_pipeline.trading.store.base import StoreBase
from trading_pipeline.trading.store.schema import (
    _insert,
    accounts,
    equity_marks,
    fills,
    insert_if_missing,
    orders,
    positions,
)

ZERO = Decimal(0)


@dataclass(frozen=True)
class EquityMark:
    """The first and the latest equity observed for an account on one session date."""

    account: str
    session_date: date
    first_ts: datetime
    first_equity: Decimal
    first_unrealized_pnl: Decimal
    last_ts: datetime
    last_equity: Decimal


class AccountRecords(StoreBase):
    """Fills booked into accounts and positions; daily equity marks."""

    # ---- fills, accounts, positions ----------------------------------------------------------
    def _book_fill(self, conn: Connection, order: Order, f: BrokerFill) -> bool:
        """Insert a fill once and update the account's position and cash in the same transaction."""
        if conn.execute(sa.select(fills.c.fill_id).where(fills.c.fill_id == f.fill_id)).first():
            return False
        now = utcnow()
        # On Postgres the account row lock serialises fills per account (SQLite: the write
        # lock). An account nobody created yet is created first, so there is a row to lock.
        insert_if_missing(
            conn, accounts, {"account": order.account},
            {"starting_cash": ZERO, "cash": ZERO, "created_at": now, "updated_at": now},
        )
        acct = conn.execute(self._lock_rows(sa.select(accounts).where(accounts.c.account == order.account))).one()
        cash = acct.cash
        prow = conn.execute(
            sa.select(positions).where(positions.c.account == order.account, positions.c.symbol == order.symbol)
        ).first()
        pf = Portfolio(order.account, cash=cash)
        if prow:
            pf.positions[order.symbol] = Position(order.account, order.symbol, prow.quantity, prow.avg_price, prow.realized_pnl)
        realized = pf.apply_fill(order.symbol, order.side, f.quantity, f.price, f.commission)
        p = pf.positions[order.symbol]
        conn.execute(
            fills.insert().values(
                fill_id=f.fill_id,
                client_order_id=order.client_order_id,
                account=order.account,
                symbol=order.symbol,
                side=order.side.value,
                quantity=f.quantity,
                price=f.price,
                commission=f.commission,
                realized_pnl=realized,
                ts=f.ts,
            )
        )
        pvals = {"quantity": p.quantity, "avg_price": p.avg_price, "realized_pnl": p.realized_pnl, "updated_at": now}
        if prow:
            conn.execute(
                positions.update()
                .where(positions.c.account == order.account, positions.c.symbol == order.symbol)
                .values(**pvals)
            )
        else:
            conn.execute(positions.insert().values(account=order.account, symbol=order.symbol, **pvals))
        conn.execute(accounts.update().where(accounts.c.account == order.account).values(cash=pf.cash, updated_at=now))
        return True

    def ensure_account(self, account: str, starting_cash: Decimal) -> bool:
        """Create the account with its starting cash; False if it already exists (unchanged)."""
        now = utcnow()
        try:
            with self.transaction() as conn:
                if conn.execute(sa.select(accounts.c.account).where(accounts.c.account == account)).first():
                    return False
                conn.execute(
                    accounts.insert().values(
                        account=account, starting_cash=starting_cash, cash=starting_cash, created_at=now, updated_at=now
                    )
                )
                return True
        except IntegrityError:
            return False

    def has_account(self, account: str) -> bool:
        with self.reading() as conn:
            return conn.execute(sa.select(accounts.c.account).where(accounts.c.account == account)).first() is not None

    def list_accounts(self) -> list[str]:
        with self.reading() as conn:
            return list(conn.execute(sa.select(accounts.c.account).order_by(accounts.c.account)).scalars())

    def portfolio(self, account: str) -> Portfolio:
        """Cash and positions as booked (maintained fill by fill)."""
        with self.reading() as conn:
            acct = conn.execute(sa.select(accounts).where(accounts.c.account == account)).first()
            rows = conn.execute(sa.select(positions).where(positions.c.account == account)).all()
        pf = Portfolio(account, starting_cash=acct.starting_cash if acct else ZERO, cash=acct.cash if acct else ZERO)
        for r in rows:
            pf.positions[r.symbol] = Position(account, r.symbol, r.quantity, r.avg_price, r.realized_pnl)
        return pf

    def list_fills(self, account: str | None = None, since: datetime | None = None) -> list[Fill]:
        q = sa.select(fills).order_by(fills.c.ts, fills.c.fill_id)
        if account:
            q = q.where(fills.c.account == account)
        if since:
            q = q.where(fills.c.ts >= since)
        with self.reading() as conn:
            return [
                Fill(r.fill_id, r.client_order_id, r.account, r.symbol, Side(r.side), r.quantity, r.price, r.commission, r.ts, r.realized_pnl)
                for r in conn.execute(q)
            ]

    def rebuild_portfolio(self, account: str) -> Portfolio:
        """The portfolio recomputed from the fills alone: to check the maintained one."""
        pf = self.portfolio(account)
        return Portfolio.from_fills(account, pf.starting_cash, self.list_fills(account))

    def realized_pnl_since(self, account: str, since: datetime) -> Decimal:
        with self.reading() as conn:
            values = conn.execute(
                sa.select(fills.c.realized_pnl).where(fills.c.account == account, fills.c.ts >= since)
            ).scalars()
            return sum(values, ZERO)

    def has_fills_before(self, account: str, ts: datetime) -> bool:
        with self.reading() as conn:
            return conn.execute(
                sa.select(fills.c.fill_id).where(fills.c.account == account, fills.c.ts < ts).limit(1)
            ).first() is not None

    def symbols_in_play(self, account: str) -> list[str]:
        """Symbols the account holds or has working orders in: the ones a risk check needs prices for."""
        open_ = [s.value for s in OPEN_STATUSES]
        with self.reading() as conn:
            held = conn.execute(
                sa.select(positions.c.symbol, positions.c.quantity).where(positions.c.account == account)
            ).all()
            working = conn.execute(
                sa.select(orders.c.symbol).where(orders.c.account == account, orders.c.status.in_(open_)).distinct()
            ).scalars()
            return sorted({s for s, q in held if q != 0} | set(working))

    # ---- daily equity marks ------------------------------------------------------------------
    def record_equity_mark(
        self, account: str, session_date: date, equity: Decimal, unrealized_pnl: Decimal, ts: datetime
    ) -> None:
        """Observe the account's equity at ``ts``: the first observation of a session date sets
        its opening mark, and the latest (by ``ts``) its closing mark. Atomic on both backends."""
        with self.transaction() as conn:
            stmt = _insert(conn, equity_marks).values(
                account=account, session_date=session_date, first_ts=ts, first_equity=equity,
                first_unrealized_pnl=unrealized_pnl, last_ts=ts, last_equity=equity,
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account", "session_date"],
                    set_={"last_ts": stmt.excluded.last_ts, "last_equity": stmt.excluded.last_equity},
                    where=equity_marks.c.last_ts <= stmt.excluded.last_ts,
                )
            )

    def equity_mark(self, account: str, session_date: date) -> EquityMark | None:
        with self.reading() as conn:
            r = conn.execute(
                sa.select(equity_marks).where(equity_marks.c.account == account, equity_marks.c.session_date == session_date)
            ).first()
        return EquityMark(**dict(r._mapping)) if r else None

    def last_equity_mark_before(self, account: str, session_date: date) -> EquityMark | None:
        """The account's latest mark on a session date before ``session_date``."""
        with self.reading() as conn:
            r = conn.execute(
                sa.select(equity_marks)
                .where(equity_marks.c.account == account, equity_marks.c.session_date < session_date)
                .order_by(equity_marks.c.session_date.desc())
                .limit(1)
            ).first()
        return EquityMark(**dict(r._mapping)) if r else None

