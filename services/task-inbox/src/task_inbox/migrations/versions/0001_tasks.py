"""Tasks, their audit trail, and tombstones of tasks cancelled before they arrived.

Revision ID: i0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "i0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Runs with search_path set to the tenant's schema: names are unqualified on purpose.
    op.create_table(
        "tasks",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("instance_id", sa.Text, nullable=False),
        sa.Column("definition_name", sa.Text, nullable=False),
        sa.Column("definition_version", sa.Text, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("form_schema", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("ui_hints", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("context", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("assignee", sa.Text, nullable=True),
        sa.Column("candidate_users", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("candidate_groups", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="50"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        # due_at, or a far-future sentinel: a NOT NULL key keeps "sort by due" a plain index range
        # and the keyset cursor a plain row comparison (tasks without a due date sort last).
        sa.Column("due_sort", sa.DateTime(timezone=True), nullable=False),
        sa.Column("follow_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_by", sa.Text, nullable=True),
        sa.Column("completion_data", pg.JSONB, nullable=True),
        sa.Column("completion_comment", sa.Text, nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text, nullable=True),
        sa.Column(
            "search",
            pg.TSVECTOR,
            sa.Computed("to_tsvector('simple', title || ' ' || description)", persisted=True),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('open', 'claimed', 'completed', 'cancelled')", name="tasks_status_check"
        ),
    )
    # Every page is "status filter + one sort key + id tiebreak": one btree per sort key, led by
    # status, serves both directions and the keyset predicate (row comparison) as an index range.
    op.create_index("tasks_status_created_idx", "tasks", ["status", "created_at", "id"])
    op.create_index("tasks_status_due_idx", "tasks", ["status", "due_sort", "id"])
    op.create_index("tasks_status_priority_idx", "tasks", ["status", "priority", "id"])
    # Visibility (groups && token groups, user = ANY(candidate_users)) and the group filter.
    op.create_index("tasks_candidate_groups_idx", "tasks", ["candidate_groups"], postgresql_using="gin")
    op.create_index("tasks_candidate_users_idx", "tasks", ["candidate_users"], postgresql_using="gin")
    op.create_index("tasks_assignee_idx", "tasks", ["assignee", "status"])
    op.create_index("tasks_instance_idx", "tasks", ["instance_id"])
    op.create_index("tasks_definition_idx", "tasks", ["definition_name", "status"])
    op.create_index("tasks_search_idx", "tasks", ["search"], postgresql_using="gin")

    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("task_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("task_events_task_idx", "task_events", ["task_id", "id"])

    # A cancellation that overtook its task's creation: remembered so the late `created` is dropped.
    op.create_table(
        "task_tombstones",
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("instance_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("task_tombstones")
    op.drop_table("task_events")
    op.drop_table("tasks")
