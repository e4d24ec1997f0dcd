"""Outbound notifications (trading_pipeline/trading/notifications.py): the outbox of signals,
fills, order rejections/denials and risk alerts, one row per event id and channel.

Only a new table: nothing stored before changes.

Revision ID: 0010_notifications
Revises: 0009_api_key_scopes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_notifications"
down_revision = "0009_api_key_scopes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("event_id", sa.String(160), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_attempt_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_created_at", table_name="notifications")
    op.drop_table("notifications")
