"""Sort indexes for lists without a status filter (the inbox's default page).

Every existing sort index is led by ``status``; a page that filters on no status (or on several)
then sorted every visible task before returning 50 (58 ms with 100,000 open tasks, measured; 0.1 ms
with these). One btree per sort key, id as the tiebreak, serves both directions and the keyset
predicate as an index range.

Revision ID: i0002
Revises: i0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "i0002"
down_revision: str | None = "i0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Runs with search_path set to the tenant's schema: names are unqualified on purpose.
    op.create_index("tasks_created_idx", "tasks", ["created_at", "id"])
    op.create_index("tasks_due_idx", "tasks", ["due_sort", "id"])
    op.create_index("tasks_priority_idx", "tasks", ["priority", "id"])


def downgrade() -> None:
    op.drop_index("tasks_priority_idx", table_name="tasks")
    op.drop_index("tasks_due_idx", table_name="tasks")
    op.drop_index("tasks_created_idx", table_name="tasks")
