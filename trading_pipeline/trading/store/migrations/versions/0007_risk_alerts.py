"""Risk monitoring alerts (trading_pipeline/trading/risk_monitor.py) and the webhook outbox:
one row per account, condition, level and session.

Only a new table: nothing stored before changes.

Revision ID: 0007_risk_alerts
Revises: 0006_brackets
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_risk_alerts"
down_revision = "0006_brackets"
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "risk_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("value", DECIMAL),
        sa.Column("limit_value", DECIMAL),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("session_date", sa.Date, nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_attempt_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("account", "kind", "level", "session_date", name="uq_risk_alerts_condition"),
    )


def downgrade() -> None:
    op.drop_table("risk_alerts")
