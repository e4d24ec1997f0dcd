"""Orders and their event history in the ops store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from trading_pipeline.trading.brokers.base import BrokerFill, BrokerOrder
from trading_pipeline.trading.model import OrderStatus
from trading_pipeline.trading.orders import OPEN_STATUSES, Order, OrderEvent, utcnow
from trading_pipeline.trading.store.base import StoreBase
from trading_pipeline.trading.store.schema import order_events, orders

ZERO = Decimal(0)


class OrderRecords(StoreBase):
    """Orders, their transitions and events (fills are booked by AccountRecords)."""

    # ---- orders ------------------------------------------------------------------------------
    @staticmethod
    def _row_order(r: Any) -> Order:
        m = r._mapping
        return Order(**{k: m[k] for k in orders.c.keys()})

    @staticmethod
    def _event_values(e: OrderEvent) -> dict[str, Any]:
        return {
            "client_order_id": e.client_order_id,
            "ts": e.ts,
            "kind": e.kind,
            "from_status": e.from_status.value if e.from_status else None,
            "to_status": e.to_status.value,
            "reason": e.reason,
        }

    def insert_order(self, order: Order, reason: str = "recorded") -> bool:
        """Record a new order with its first event. False (and no change) if the id exists."""
        try:
            with self.transaction() as conn:
                exists = conn.execute(
                    sa.select(orders.c.client_order_id).where(
                        orders.c.client_order_id == order.client_order_id
                    )
                ).first()
                if exists:
                    return False
                conn.execute(orders.insert().values(**order.record()))
                conn.execute(
                    order_events.insert().values(
                        client_order_id=order.client_order_id,
                        ts=order.created_at,
                        kind="created",
                        from_status=None,
                        to_status=order.status.value,
                        reason=reason,
                    )
                )
                return True
        except IntegrityError:  # a concurrent writer won the race (Postgres)
            return False

    def get_order(self, client_order_id: str) -> Order | None:
        with self.reading() as conn:
            r = conn.execute(sa.select(orders).where(orders.c.client_order_id == client_order_id)).first()
        return self._row_order(r) if r else None

    def list_orders(
        self,
        *,
        account: str | None = None,
        status: OrderStatus | str | Iterable[OrderStatus | str] | None = None,
        symbol: str | None = None,
        strategy: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        parent: str | None = None,
    ) -> list[Order]:
        """Newest first. ``parent``: only the bracket exits of that entry."""
        q = sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.client_order_id)
        if parent:
            q = q.where(orders.c.parent_client_order_id == parent)
        if account:
            q = q.where(orders.c.account == account)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            q = q.where(orders.c.status.in_([OrderStatus(s).value for s in statuses]))
        if symbol:
            q = q.where(orders.c.symbol == symbol)
        if strategy:
            q = q.where(orders.c.strategy == strategy)
        if since:
            q = q.where(orders.c.created_at >= since)
        if limit:
            q = q.limit(limit)
        with self.reading() as conn:
            return [self._row_order(r) for r in conn.execute(q)]

    def children_of(self, client_order_ids: Iterable[str]) -> dict[str, list[str]]:
        """entry id -> its bracket exits' ids (sorted), for those of ``client_order_ids`` that have any."""
        ids = sorted(set(client_order_ids))
        out: dict[str, list[str]] = {}
        with self.reading() as conn:
            for i in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(orders.c.parent_client_order_id, orders.c.client_order_id)
                    .where(orders.c.parent_client_order_id.in_(ids[i:i + 500]))
                    .order_by(orders.c.client_order_id)
                )
                for parent, child in rows:
                    out.setdefault(parent, []).append(child)
        return out

    def order_events(self, client_order_id: str) -> list[OrderEvent]:
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(order_events)
                .where(order_events.c.client_order_id == client_order_id)
                .order_by(order_events.c.id)
            ).all()
        return [
            OrderEvent(
                r.client_order_id,
                r.ts,
                OrderStatus(r.from_status) if r.from_status else None,
                OrderStatus(r.to_status),
                r.kind,
                r.reason,
            )
            for r in rows
        ]

    def order_event_log(
        self, after_id: int = 0, *, upto_id: int | None = None, limit: int = 1000
    ) -> list[tuple[int, OrderEvent, Order | None]]:
        """Every order's events with ``after_id < id <= upto_id``, oldest first, each with its id
        and its order as it is now: the log the WebSocket hub tails and replays. Ids grow with
        each insert; on Postgres a later id can commit before an earlier one (the hub waits)."""
        ev = order_events
        q = (
            sa.select(
                ev.c.id.label("event_id"), ev.c.client_order_id.label("event_order_id"), ev.c.ts.label("event_ts"),
                ev.c.kind.label("event_kind"), ev.c.from_status.label("event_from"), ev.c.to_status.label("event_to"),
                ev.c.reason.label("event_reason"), *orders.c,
            )
            .select_from(ev.outerjoin(orders, orders.c.client_order_id == ev.c.client_order_id))
            .where(ev.c.id > after_id)
            .order_by(ev.c.id)
            .limit(limit)
        )
        if upto_id is not None:
            q = q.where(ev.c.id <= upto_id)
        with self.reading() as conn:
            rows = conn.execute(q).all()
        return [
            (
                r.event_id,
                OrderEvent(
                    r.event_order_id,
                    r.event_ts,
                    OrderStatus(r.event_from) if r.event_from else None,
                    OrderStatus(r.event_to),
                    r.event_kind,
                    r.event_reason,
                ),
                self._row_order(r) if r.client_order_id is not None else None,
            )
            for r in rows
        ]

    def last_order_event_id(self) -> int:
        """The newest order event's id (0 when there is none)."""
        with self.reading() as conn:
            return conn.execute(sa.select(sa.func.max(order_events.c.id))).scalar() or 0

    def update_order(
        self, client_order_id: str, change: Callable[[Order, Connection], list[OrderEvent]]
    ) -> Order:
        """Load, change (through the Order state machine) and save one order atomically."""
        with self.transaction() as conn:
            r = conn.execute(
                self._lock_rows(sa.select(orders).where(orders.c.client_order_id == client_order_id))
            ).first()
            if r is None:
                raise KeyError(f"no order {client_order_id!r} in the ops store")
            order = self._row_order(r)
            events = change(order, conn)
            values = order.record()
            values.pop("client_order_id")
            conn.execute(
                orders.update().where(orders.c.client_order_id == client_order_id).values(**values)
            )
            if events:
                conn.execute(order_events.insert(), [self._event_values(e) for e in events])
            return order

    def transition(self, client_order_id: str, to: OrderStatus | str, reason: str) -> Order:
        return self.update_order(client_order_id, lambda o, _c: [o.transition(to, reason)])

    def note(self, client_order_id: str, reason: str) -> Order:
        """Record an event that does not change status (e.g. a broker error, outcome unknown)."""
        return self.update_order(client_order_id, lambda o, _c: [o.note(reason)])

    def sync_from_broker(self, client_order_id: str, bo: BrokerOrder, broker: str | None = None) -> Order:
        """Bring our order in line with the broker's view: new fills, then the status.

        Idempotent: fills are keyed by fill id, and a status we already have is left alone.
        If the broker reports more filled quantity than its fills explain, the difference is
        booked as one synthetic fill keyed by the cumulative quantity.
        """

        def change(o: Order, conn: Connection) -> list[OrderEvent]:
            ev: list[OrderEvent] = []
            o.broker_order_id = bo.broker_order_id or o.broker_order_id
            o.broker = broker or o.broker
            if bo.status == OrderStatus.REJECTED:
                if o.status != OrderStatus.REJECTED:
                    ev.append(o.transition(OrderStatus.REJECTED, f"broker rejected: {bo.reason or 'no reason given'}"))
                return ev
            if o.status == OrderStatus.NEW:
                ev.append(o.transition(OrderStatus.ACCEPTED, f"accepted by broker as {bo.broker_order_id}"))
            for f in bo.fills:
                if o.filled_quantity + f.quantity > o.quantity:
                    continue
                if self._book_fill(conn, o, f):
                    ev.append(o.apply_fill(f.quantity, f.price))
            missing = bo.filled_quantity - o.filled_quantity
            if missing > 0 and bo.avg_fill_price is not None and o.is_open:
                prev_value = (o.avg_fill_price or ZERO) * o.filled_quantity
                price = (bo.avg_fill_price * bo.filled_quantity - prev_value) / missing
                f = BrokerFill(f"{o.client_order_id}:cum:{bo.filled_quantity}", o.client_order_id, missing, price, ZERO, utcnow())
                if self._book_fill(conn, o, f):
                    ev.append(o.apply_fill(f.quantity, f.price))
            if bo.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and o.is_open:
                ev.append(o.transition(bo.status, bo.reason or f"{bo.status} at broker"))
            if bo.quantity != o.quantity and o.is_open and bo.quantity > o.filled_quantity:
                ev.append(o.request_modify(quantity=bo.quantity))
            return ev

        return self.update_order(client_order_id, change)

    def count_open_orders(self, account: str) -> int:
        with self.reading() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(orders)
                .where(orders.c.account == account, orders.c.status.in_([s.value for s in OPEN_STATUSES]))
            ).scalar_one()

    def count_orders_since(self, account: str, since: datetime) -> int:
        """Orders that went (or were meant to go) to a broker since ``since``; risk denials excluded."""
        with self.reading() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(orders)
                .where(
                    orders.c.account == account,
                    orders.c.created_at >= since,
                    orders.c.status != OrderStatus.DENIED.value,
                )
            ).scalar_one()

