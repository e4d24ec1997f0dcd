"""Daily equity marks: per account and session (UTC date), the first and the latest equity
observed; the start-of-day equity the daily loss limit measures from.

Was hand-rolled migration 3.

Revision ID: 0003_equity_marks
Revises: 0002_paper_broker
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_equity_marks"
down_revision = "0002_paper_broker"
branch_labels = None
depends_on = None

DECIMAL = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "equity_marks",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("session_date", sa.Date, primary_key=True),
        sa.Column("first_ts", sa.DateTime, nullable=False),
        sa.Column("first_equity", DECIMAL, nullable=False),
        sa.Column("first_unrealized_pnl", DECIMAL, nullable=False),
        sa.Column("last_ts", sa.DateTime, nullable=False),
        sa.Column("last_equity", DECIMAL, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("equity_marks")
