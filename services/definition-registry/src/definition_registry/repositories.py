"""The only module of the registry that speaks SQL.

``definitions`` lives in each tenant's schema (``t_<tenant>``); the table is declared with the
platform's placeholder schema and resolved per connection (see :mod:`wf_platform.db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wf_platform.db import TENANT_SCHEMA

__all__ = ["DefinitionRepository", "DefinitionRow", "VersionRow", "definitions"]

definitions = sa.Table(
    "definitions",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("content", pg.JSONB, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deprecated_by", sa.Text, nullable=True),
    schema=TENANT_SCHEMA,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRow:
    """A stored version without its content."""

    name: str
    version: str
    description: str
    digest: str
    author: str
    created_at: datetime
    deprecated_at: datetime | None
    deprecated_by: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionRow(VersionRow):
    """A stored version with its wire-form content."""

    content: dict[str, Any]


_META = (
    definitions.c.name,
    definitions.c.version,
    definitions.c.description,
    definitions.c.digest,
    definitions.c.author,
    definitions.c.created_at,
    definitions.c.deprecated_at,
    definitions.c.deprecated_by,
)


def _version_row(row: Any) -> VersionRow:
    return VersionRow(
        name=row.name,
        version=row.version,
        description=row.description,
        digest=row.digest,
        author=row.author,
        created_at=row.created_at,
        deprecated_at=row.deprecated_at,
        deprecated_by=row.deprecated_by,
    )


def _definition_row(row: Any) -> DefinitionRow:
    return DefinitionRow(
        name=row.name,
        version=row.version,
        description=row.description,
        digest=row.digest,
        author=row.author,
        created_at=row.created_at,
        deprecated_at=row.deprecated_at,
        deprecated_by=row.deprecated_by,
        content=dict(row.content),
    )


class DefinitionRepository:
    """Definition versions of one tenant, on a connection whose tenant schema is mapped."""

    def __init__(self, conn: AsyncConnection, /) -> None:
        self.conn = conn

    async def insert_if_absent(
        self, *, name: str, version: str, description: str, content: dict[str, Any], digest: str, author: str
    ) -> DefinitionRow | None:
        """Insert a version; ``None`` when ``(name, version)`` already exists (concurrent inserts wait)."""
        stmt = (
            pg_insert(definitions)
            .values(
                name=name,
                version=version,
                description=description,
                content=content,
                digest=digest,
                author=author,
                created_at=sa.func.now(),
            )
            .on_conflict_do_nothing(index_elements=[definitions.c.name, definitions.c.version])
            .returning(*_META, definitions.c.content)
        )
        row = (await self.conn.execute(stmt)).first()
        return _definition_row(row) if row is not None else None

    async def get(self, name: str, version: str, /) -> DefinitionRow | None:
        """One version with content."""
        row = (
            await self.conn.execute(
                sa.select(*_META, definitions.c.content).where(
                    definitions.c.name == name, definitions.c.version == version
                )
            )
        ).first()
        return _definition_row(row) if row is not None else None

    async def versions(self, name: str, /) -> list[VersionRow]:
        """Every version of a name, without content (unordered: semver order is the service's)."""
        rows = await self.conn.execute(sa.select(*_META).where(definitions.c.name == name))
        return [_version_row(r) for r in rows]

    async def all_versions(self) -> list[VersionRow]:
        """Every version of every name, without content."""
        rows = await self.conn.execute(sa.select(*_META).order_by(definitions.c.name))
        return [_version_row(r) for r in rows]

    async def deprecate(self, name: str, version: str, /, *, by: str) -> VersionRow | None:
        """Mark a version deprecated (idempotent: the first deprecation's time and author stay)."""
        await self.conn.execute(
            definitions.update()
            .where(
                definitions.c.name == name,
                definitions.c.version == version,
                definitions.c.deprecated_at.is_(None),
            )
            .values(deprecated_at=sa.func.now(), deprecated_by=by)
        )
        row = (
            await self.conn.execute(
                sa.select(*_META).where(definitions.c.name == name, definitions.c.version == version)
            )
        ).first()
        return _version_row(row) if row is not None else None
