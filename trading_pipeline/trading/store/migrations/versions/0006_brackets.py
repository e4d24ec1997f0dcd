"""Brackets: an order's parent (the entry a take-profit or stop-loss exit closes) and its
one-cancels-other group, on our orders and on the paper broker's book.

Only new nullable columns: orders stored before are not bracket exits.

Revision ID: 0006_brackets
Revises: 0005_stop_orders
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_brackets"
down_revision = "0005_stop_orders"
branch_labels = None
depends_on = None

TABLES = ("orders", "paper_orders")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("parent_client_order_id", sa.String(64)))
        op.add_column(table, sa.Column("oco_group", sa.String(64)))
        op.create_index(f"ix_{table}_parent_client_order_id", table, ["parent_client_order_id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_parent_client_order_id", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("oco_group")
            batch.drop_column("parent_client_order_id")
