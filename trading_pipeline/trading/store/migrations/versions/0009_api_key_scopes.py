"""API keys get a scope: ``read``, ``trade`` or ``admin`` (each implies the ones before it).

Every key made before this revision could do everything the API then served (read, place,
modify and cancel orders): that is ``trade``, so existing keys get ``trade`` and keep working.
``admin`` (the kill switch from the API) is new and only given on purpose
(``trading api-key create NAME --scope admin``). The column keeps ``trade`` as its server
default so that a writer that does not name a scope (an older release during an upgrade)
makes keys that behave as they always did.

Revision ID: 0009_api_key_scopes
Revises: 0008_corporate_action_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_api_key_scopes"
down_revision = "0008_corporate_action_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scope", sa.String(16), nullable=False, server_default="trade"))


def downgrade() -> None:
    # batch mode: SQLite rebuilds the table; Postgres drops the column
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
