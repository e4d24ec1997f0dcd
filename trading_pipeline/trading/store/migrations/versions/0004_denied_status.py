"""Risk denials get their own status, ``denied`` (``rejected`` stays for broker refusals).

Was hand-rolled migration 4, a data migration. Orders our risk checks stopped were stored as
``rejected`` with a ``risk rule ...`` reason and no broker order id; they become ``denied``, in
the orders and in their event history.

Revision ID: 0004_denied_status
Revises: 0003_equity_marks
"""

from __future__ import annotations

from alembic import op

revision = "0004_denied_status"
down_revision = "0003_equity_marks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE orders SET status = 'denied' WHERE status = 'rejected' AND broker_order_id IS NULL "
        "AND client_order_id IN (SELECT client_order_id FROM order_events "
        "WHERE to_status = 'rejected' AND reason LIKE 'risk rule %')"
    )
    op.execute(
        "UPDATE order_events SET to_status = 'denied' WHERE to_status = 'rejected' AND reason LIKE 'risk rule %'"
    )


def downgrade() -> None:
    # before this revision a risk denial was a rejection
    op.execute("UPDATE orders SET status = 'rejected' WHERE status = 'denied'")
    op.execute("UPDATE order_events SET to_status = 'rejected' WHERE to_status = 'denied'")
    op.execute("UPDATE order_events SET from_status = 'rejected' WHERE from_status = 'denied'")
