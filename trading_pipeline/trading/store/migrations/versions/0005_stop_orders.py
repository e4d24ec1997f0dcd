"""Stop, stop-limit and trailing-stop orders: their prices on our orders and on the paper
broker's book, plus what the paper broker remembers of a working stop (a trailing stop's
high/low-water mark and current stop, a stop-limit's trigger time).

Only new nullable columns: orders stored before keep working (market and limit orders have
none of them).

Revision ID: 0005_stop_orders
Revises: 0004_denied_status
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_stop_orders"
down_revision = "0004_denied_status"
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)
ORDER_COLUMNS = ("stop_price", "trail_percent", "trail_amount")
PAPER_DECIMALS = ("trail_mark", "current_stop")


def upgrade() -> None:
    for name in ORDER_COLUMNS:
        op.add_column("orders", sa.Column(name, DECIMAL))
    for name in ORDER_COLUMNS + PAPER_DECIMALS:
        op.add_column("paper_orders", sa.Column(name, DECIMAL))
    op.add_column("paper_orders", sa.Column("triggered_at", sa.DateTime))


def downgrade() -> None:
    # rows of stop orders stay (their history with them); only their stop terms go
    with op.batch_alter_table("paper_orders") as batch:
        for name in (*ORDER_COLUMNS, *PAPER_DECIMALS, "triggered_at"):
            batch.drop_column(name)
    with op.batch_alter_table("orders") as batch:
        for name in ORDER_COLUMNS:
            batch.drop_column(name)
