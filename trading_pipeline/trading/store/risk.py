"""Risk events and the kill switch in the ops store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from trading_pipeline.trading.orders import utcnow
from trading_pipeline.trading.store.base import StoreBase
from trading_pipeline.trading.store.schema import kill_switch, risk_events, upsert


@dataclass(frozen=True)
class KillSwitch:
    active: bool
    reason: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RiskEvent:
    id: int
    ts: datetime
    client_order_id: str | None
    account: str | None
    symbol: str | None
    side: str | None
    quantity: Decimal | None
    rule: str
    reason: str
    value: Decimal | None
    limit_value: Decimal | None


class RiskRecords(StoreBase):
    """Pre-trade risk decisions and the kill switch."""

    # ---- risk events -------------------------------------------------------------------------
    def record_risk_event(
        self,
        *,
        rule: str,
        reason: str,
        client_order_id: str | None = None,
        account: str | None = None,
        symbol: str | None = None,
        side: str | None = None,
        quantity: Decimal | None = None,
        value: Decimal | None = None,
        limit_value: Decimal | None = None,
        ts: datetime | None = None,
    ) -> int:
        with self.transaction() as conn:
            res = conn.execute(
                risk_events.insert().values(
                    ts=ts or utcnow(),
                    client_order_id=client_order_id,
                    account=account,
                    symbol=symbol,
                    side=side,
                    quantity=quantity,
                    rule=rule,
                    reason=reason,
                    value=value,
                    limit_value=limit_value,
                )
            )
            return int(res.inserted_primary_key[0])

    def list_risk_events(self, *, account: str | None = None, limit: int = 100) -> list[RiskEvent]:
        q = sa.select(risk_events).order_by(risk_events.c.id.desc()).limit(limit)
        if account:
            q = q.where(risk_events.c.account == account)
        with self.reading() as conn:
            return [RiskEvent(**dict(r._mapping)) for r in conn.execute(q)]

    # ---- kill switch ---------------------------------------------------------------------------
    def set_kill_switch(self, active: bool, reason: str | None = None, updated_by: str | None = None) -> KillSwitch:
        now = utcnow()
        values = {"active": active, "reason": reason, "updated_by": updated_by, "updated_at": now}
        with self.transaction() as conn:
            upsert(conn, kill_switch, {"id": 1}, values)
        return KillSwitch(active, reason, updated_by, now)

    def kill_switch(self) -> KillSwitch:
        with self.reading() as conn:
            r = conn.execute(sa.select(kill_switch).where(kill_switch.c.id == 1)).first()
        return KillSwitch(bool(r.active), r.reason, r.updated_by, r.updated_at) if r else KillSwitch(False)

