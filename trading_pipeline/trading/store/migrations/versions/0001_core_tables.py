"""Orders, order events, fills, accounts, positions, risk events, cursors, kill switch, api keys.

Was hand-rolled migration 1. Money and quantities are decimal strings (VARCHAR(64)); the live
tables in ``schema.py`` declare them as ``DecimalText``, which is the same column.

Revision ID: 0001_core_tables
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_core_tables"
down_revision = None
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("quantity", DECIMAL, nullable=False),
        sa.Column("limit_price", DECIMAL),
        sa.Column("time_in_force", sa.String(8), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("filled_quantity", DECIMAL, nullable=False),
        sa.Column("avg_fill_price", DECIMAL),
        sa.Column("broker", sa.String(32)),
        sa.Column("broker_order_id", sa.String(64)),
        sa.Column("signal_ts", sa.DateTime),
        sa.Column("reason", sa.Text),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_orders_account", "orders", ["account"])
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_index("ix_orders_symbol", "orders", ["symbol"])

    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("from_status", sa.String(24)),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_order_events_client_order_id", "order_events", ["client_order_id"])

    op.create_table(
        "fills",
        sa.Column("fill_id", sa.String(96), primary_key=True),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", DECIMAL, nullable=False),
        sa.Column("price", DECIMAL, nullable=False),
        sa.Column("commission", DECIMAL, nullable=False),
        sa.Column("realized_pnl", DECIMAL, nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
    )
    op.create_index("ix_fills_account", "fills", ["account"])
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])
    op.create_index("ix_fills_ts", "fills", ["ts"])

    op.create_table(
        "accounts",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("starting_cash", DECIMAL, nullable=False),
        sa.Column("cash", DECIMAL, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "positions",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("quantity", DECIMAL, nullable=False),
        sa.Column("avg_price", DECIMAL, nullable=False),
        sa.Column("realized_pnl", DECIMAL, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "risk_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("client_order_id", sa.String(64)),
        sa.Column("account", sa.String(64)),
        sa.Column("symbol", sa.String(32)),
        sa.Column("side", sa.String(8)),
        sa.Column("quantity", DECIMAL),
        sa.Column("rule", sa.String(48), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("value", DECIMAL),
        sa.Column("limit_value", DECIMAL),
    )
    op.create_index("ix_risk_events_client_order_id", "risk_events", ["client_order_id"])
    op.create_index("ix_risk_events_ts", "risk_events", ["ts"])

    op.create_table(
        "alert_cursors",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "kill_switch",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("updated_by", sa.String(64)),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.UniqueConstraint("key_hash"),
    )


def downgrade() -> None:
    for table in ("api_keys", "kill_switch", "alert_cursors", "risk_events", "positions", "accounts",
                  "fills", "order_events", "orders"):
        op.drop_table(table)  # its indexes go with it
