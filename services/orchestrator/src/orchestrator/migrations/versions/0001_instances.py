"""instances, step attempts and cached definitions of a tenant

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("business_key", sa.Text, nullable=True),
        sa.Column("state", pg.JSONB, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=True),
        sa.Column("traceparent", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=True, unique=True),
        sa.Column("request_digest", sa.Text, nullable=True),
        sa.Column("created_by", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Listing is keyset-paginated on (created_at, id), newest first, optionally by status / definition.
    op.create_index("instances_created", "instances", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "instances_status_created", "instances", ["status", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "instances_definition_created",
        "instances",
        ["definition", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index("instances_business_key", "instances", ["business_key"])
    op.create_table(
        "step_attempts",
        sa.Column("job_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("instance_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("step_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.Text, nullable=True),
        sa.Column("error", pg.JSONB, nullable=True),
    )
    op.create_index("step_attempts_instance", "step_attempts", ["instance_id", "dispatched_at"])
    op.create_table(
        "definitions",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("wire", pg.JSONB, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("definitions")
    op.drop_table("step_attempts")
    op.drop_table("instances")
