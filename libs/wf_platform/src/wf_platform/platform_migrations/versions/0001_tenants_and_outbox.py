"""Tenants and the shared outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Runs with search_path set to the ``wf`` schema: names are unqualified on purpose.
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("schema_revision", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="tenants_status_check"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("ordering_key", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    # The relay's scan: only unsent rows, in id order; tiny however many tenants there are.
    op.create_index("outbox_pending", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    op.create_index(
        "outbox_pending_by_key", "outbox", ["ordering_key", "id"], postgresql_where=sa.text("sent_at IS NULL")
    )
    op.create_index("outbox_sent_at", "outbox", ["sent_at"], postgresql_where=sa.text("sent_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("tenants")
