"""Risk monitoring alerts in the ops store: recorded once per condition and session, listed by
id for the WebSocket push and REST catch-up, and the webhook's outbox (delivered, attempts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from trading_pipeline.trading.orders import utcnow
from trading_pipeline.trading.store.base import StoreBase
from trading_pipeline.trading.store.schema import equity_marks, risk_alerts


@dataclass(frozen=True)
class RiskAlert:
    """One stored alert: ``kind`` (e.g. ``limit_usage:max_total_exposure``, ``daily_loss``,
    ``drawdown``, ``var``), ``level`` (``warning`` or ``breach``), the measured ``value`` and the
    ``limit_value`` it is compared to."""

    id: int
    account: str
    kind: str
    level: str
    value: Decimal | None
    limit_value: Decimal | None
    message: str
    session_date: date
    ts: datetime
    delivered_at: datetime | None = None
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_error: str | None = None

    def public(self) -> dict:
        """The alert as JSON-ready data (the WebSocket push, the webhook body, the CLI)."""
        return {
            "id": self.id, "source": "risk", "account": self.account, "kind": self.kind, "level": self.level,
            "value": None if self.value is None else str(self.value),
            "limit": None if self.limit_value is None else str(self.limit_value),
            "message": self.message, "session_date": self.session_date.isoformat(), "ts": self.ts.isoformat(),
        }


def _insert_stmt(store: StoreBase, table: sa.Table) -> sa.Insert:
    """An INSERT with ``ON CONFLICT`` for the store's dialect (SQLite or Postgres)."""
    return (sqlite if store.is_sqlite else postgresql).insert(table)


class RiskAlertRecords(StoreBase):
    """Risk monitoring alerts and their webhook delivery state."""

    def record_risk_alert(
        self, *, account: str, kind: str, level: str, message: str, session_date: date,
        value: Decimal | None = None, limit_value: Decimal | None = None, ts: datetime | None = None,
    ) -> RiskAlert | None:
        """Store the alert unless this account, kind and level already alerted this session;
        the new alert, or None when it had."""
        key = {"account": account, "kind": kind, "level": level, "session_date": session_date}
        stmt = _insert_stmt(self, risk_alerts).values(
            **key, value=value, limit_value=limit_value, message=message, ts=ts or utcnow(), attempts=0,
        )
        # RETURNING, not rowcount: with a serial id psycopg reports 1 row even when nothing was inserted
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key)).returning(*risk_alerts.c)
        with self.transaction() as conn:
            row = conn.execute(stmt).first()
        return RiskAlert(**dict(row._mapping)) if row is not None else None

    def list_risk_alerts(
        self, *, since_id: int = 0, account: str | None = None, limit: int = 100, newest_first: bool = False,
    ) -> list[RiskAlert]:
        """Alerts with ``id > since_id`` in id order (or the newest first), at most ``limit``."""
        q = sa.select(risk_alerts).where(risk_alerts.c.id > since_id)
        if account:
            q = q.where(risk_alerts.c.account == account)
        q = q.order_by(risk_alerts.c.id.desc() if newest_first else risk_alerts.c.id).limit(limit)
        with self.reading() as conn:
            return [RiskAlert(**dict(r._mapping)) for r in conn.execute(q)]

    def last_risk_alert_id(self) -> int:
        with self.reading() as conn:
            return int(conn.execute(sa.select(sa.func.max(risk_alerts.c.id))).scalar() or 0)

    def undelivered_risk_alerts(self, *, max_attempts: int, limit: int = 100) -> list[RiskAlert]:
        """Alerts not delivered yet with fewer than ``max_attempts`` attempts, oldest first (the
        caller applies the backoff: it knows the clock)."""
        q = (
            sa.select(risk_alerts)
            .where(risk_alerts.c.delivered_at.is_(None), risk_alerts.c.attempts < max_attempts)
            .order_by(risk_alerts.c.id)
            .limit(limit)
        )
        with self.reading() as conn:
            return [RiskAlert(**dict(r._mapping)) for r in conn.execute(q)]

    def mark_risk_alert_attempt(self, alert_id: int, ts: datetime, error: str | None) -> None:
        """One delivery attempt at ``ts``: delivered when ``error`` is None, else the error kept."""
        values: dict = {"attempts": risk_alerts.c.attempts + 1, "last_attempt_at": ts, "last_error": error}
        if error is None:
            values["delivered_at"] = ts
        with self.transaction() as conn:
            conn.execute(risk_alerts.update().where(risk_alerts.c.id == alert_id).values(**values))

    def equity_peak(self, account: str, upto: date | None = None) -> Decimal | None:
        """The highest closing (latest) equity mark of ``account`` (up to session ``upto``), or None."""
        q = sa.select(equity_marks.c.last_equity).where(equity_marks.c.account == account)
        if upto is not None:
            q = q.where(equity_marks.c.session_date <= upto)
        with self.reading() as conn:
            values = [Decimal(v) for v in conn.execute(q).scalars()]  # decimal text: max in Python, not SQL
        return max(values) if values else None
