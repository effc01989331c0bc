"""Definition versions, stored immutably.

Revision ID: r0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "r0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Runs with search_path set to the tenant's schema: names are unqualified on purpose.
    op.create_table(
        "definitions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("content", pg.JSONB, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deprecated_by", sa.Text, nullable=True),
        sa.UniqueConstraint("name", "version", name="definitions_name_version_key"),
    )
    # A registered version is immutable: only the deprecation columns may ever change.
    op.execute(
        """
        CREATE FUNCTION definitions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.name IS DISTINCT FROM OLD.name OR NEW.version IS DISTINCT FROM OLD.version
             OR NEW.content IS DISTINCT FROM OLD.content OR NEW.digest IS DISTINCT FROM OLD.digest
             OR NEW.author IS DISTINCT FROM OLD.author OR NEW.created_at IS DISTINCT FROM OLD.created_at
             OR NEW.description IS DISTINCT FROM OLD.description THEN
            RAISE EXCEPTION 'definition versions are immutable' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER definitions_immutable BEFORE UPDATE ON definitions "
        "FOR EACH ROW EXECUTE FUNCTION definitions_immutable()"
    )


def downgrade() -> None:
    op.drop_table("definitions")
    op.execute("DROP FUNCTION IF EXISTS definitions_immutable()")
