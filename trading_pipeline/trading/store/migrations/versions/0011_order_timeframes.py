"""Orders record the bar size of the signal they came from (``orders.timeframe``): an order run
for one bar size advances only its own working orders, so one intraday scan trading two bar
sizes no longer lets one size's run move the other's orders (trading_pipeline/defs/orders.py).

A new nullable column. Orders stored before it are filled in from what they hold: an order of a
scan (strategy other than ``manual``) whose signal bar starts at midnight is from a daily scan
(a daily bar's ``ts`` is its session date at midnight), so ``1d``; a bracket exit takes its
entry's value. Everything else stays NULL: manual orders, and scan orders from an intraday bar
whose size the store never knew (no order run advances those; cancel or sync them by hand).

Revision ID: 0011_order_timeframes
Revises: 0010_notifications
"""

from __future__ import annotations

from datetime import time

import sqlalchemy as sa
from alembic import op

revision = "0011_order_timeframes"
down_revision = "0010_notifications"
branch_labels = None
depends_on = None

# the table as this revision sees it (never the live schema: a revision does the same forever)
ORDERS = sa.table(
    "orders",
    sa.column("client_order_id", sa.String),
    sa.column("strategy", sa.String),
    sa.column("signal_ts", sa.DateTime),
    sa.column("parent_client_order_id", sa.String),
    sa.column("timeframe", sa.String),
)


def upgrade() -> None:
    op.add_column("orders", sa.Column("timeframe", sa.String(8)))
    conn = op.get_bind()
    rows = conn.execute(sa.select(ORDERS.c.client_order_id, ORDERS.c.strategy, ORDERS.c.signal_ts,
                                  ORDERS.c.parent_client_order_id)).all()
    daily = {r.client_order_id for r in rows
             if r.strategy != "manual" and r.signal_ts is not None and r.signal_ts.time() == time(0)}
    daily |= {r.client_order_id for r in rows if r.parent_client_order_id in daily and r.strategy != "manual"}
    ids = sorted(daily)
    for i in range(0, len(ids), 500):
        conn.execute(ORDERS.update().where(ORDERS.c.client_order_id.in_(ids[i:i + 500])).values(timeframe="1d"))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("timeframe")
