"""The paper broker's own book: its orders, fills and accounts ("the broker", separate from
our view of orders).

Was hand-rolled migration 2.

Revision ID: 0002_paper_broker
Revises: 0001_core_tables
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_paper_broker"
down_revision = "0001_core_tables"
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "paper_orders",
        sa.Column("client_order_id", sa.String(64), primary_key=True),
        sa.Column("broker_order_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("quantity", DECIMAL, nullable=False),
        sa.Column("limit_price", DECIMAL),
        sa.Column("time_in_force", sa.String(8), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("filled_quantity", DECIMAL, nullable=False),
        sa.Column("avg_fill_price", DECIMAL),
        sa.Column("reason", sa.Text),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("broker_order_id"),
    )
    op.create_index("ix_paper_orders_account", "paper_orders", ["account"])
    op.create_index("ix_paper_orders_status", "paper_orders", ["status"])

    op.create_table(
        "paper_fills",
        sa.Column("fill_id", sa.String(96), primary_key=True),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", DECIMAL, nullable=False),
        sa.Column("price", DECIMAL, nullable=False),
        sa.Column("commission", DECIMAL, nullable=False),
        sa.Column("bar_ts", sa.DateTime, nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
    )
    op.create_index("ix_paper_fills_account", "paper_fills", ["account"])
    op.create_index("ix_paper_fills_client_order_id", "paper_fills", ["client_order_id"])

    op.create_table(
        "paper_accounts",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("starting_cash", DECIMAL, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("paper_accounts", "paper_fills", "paper_orders"):
        op.drop_table(table)
