"""API key hashes and the alert cursors in the ops store."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from trading_pipeline.trading.orders import utcnow
from trading_pipeline.trading.store.base import StoreBase
from trading_pipeline.trading.store.schema import alert_cursors, api_keys, upsert


class KeyRecords(StoreBase):
    """API keys (hashes only; the API hashes and checks them) and named cursors."""

    # ---- alert cursors -----------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        with self.reading() as conn:
            return conn.execute(sa.select(alert_cursors.c.cursor).where(alert_cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, cursor: str) -> None:
        now = utcnow()
        with self.transaction() as conn:
            upsert(conn, alert_cursors, {"name": name}, {"cursor": cursor, "updated_at": now})

    # ---- API keys (hashes only; the API engineer owns hashing and checking) ------------------
    def create_api_key(self, name: str, key_hash: str) -> int:
        with self.transaction() as conn:
            res = conn.execute(api_keys.insert().values(name=name, key_hash=key_hash, created_at=utcnow()))
            return int(res.inserted_primary_key[0])

    def revoke_api_key(self, key_id: int) -> bool:
        with self.transaction() as conn:
            return bool(
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                ).rowcount
            )

    def find_api_key(self, key_hash: str) -> dict[str, Any] | None:
        """The active key with this hash, or None (revoked keys are not found)."""
        with self.reading() as conn:
            r = conn.execute(
                sa.select(api_keys).where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
            ).first()
        return dict(r._mapping) if r else None

    def list_api_keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        q = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at).order_by(api_keys.c.id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
