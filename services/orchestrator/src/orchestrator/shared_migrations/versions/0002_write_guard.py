"""the guard of single-statement writes

Revision ID: 0002
Revises: 0001

The orchestrator's write statements check what they write, and ``write_guard`` fails the whole
statement (SQLSTATE ``WF409``) when a check does not hold: every instance updated is still at the
revision it was locked at, and every instance a start inserts was inserted (its idempotency key
was free). A start is one statement with no transaction block (no BEGIN, no COMMIT: two round
trips fewer), so the guard is what keeps it all or nothing; the starts are then written again in
a transaction.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION orch.write_guard(ok boolean) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF NOT ok THEN
                RAISE EXCEPTION 'the rows this statement read changed before it wrote'
                    USING ERRCODE = 'WF409';
            END IF;
            RETURN ok;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION orch.write_guard(boolean)")
