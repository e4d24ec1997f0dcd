"""Corporate actions applied per account (trading_pipeline/trading/corporate_actions.py): one row
per account and action (symbol:ex_date:kind), unique, so applying an action twice is a no-op.

Only a new table: nothing stored before changes.

Revision ID: 0008_corporate_action_events
Revises: 0007_risk_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_corporate_action_events"
down_revision = "0007_risk_alerts"
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "corporate_action_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("action_key", sa.String(96), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("ex_date", sa.Date, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ratio", DECIMAL),
        sa.Column("amount", DECIMAL),
        sa.Column("new_symbol", sa.String(32)),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("quantity_before", DECIMAL, nullable=False),
        sa.Column("avg_price_before", DECIMAL, nullable=False),
        sa.Column("quantity_after", DECIMAL, nullable=False),
        sa.Column("avg_price_after", DECIMAL, nullable=False),
        sa.Column("cash_delta", DECIMAL, nullable=False),
        sa.Column("orders_adjusted", sa.Integer, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("applied_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("account", "action_key", name="uq_corporate_action_events_action"),
    )


def downgrade() -> None:
    op.drop_table("corporate_action_events")
