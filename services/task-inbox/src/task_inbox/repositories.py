"""The only module of the inbox that speaks SQL.

Tables live in each tenant's schema (``t_<tenant>``); they are declared with the platform's
placeholder schema and resolved per connection (see :mod:`wf_platform.db`).

Visibility is a SQL predicate (:func:`visible_to`), added to every read and write that a person
makes: the caller is the assignee, or a candidate user, or holds one of the candidate groups. The
groups are the token's ``groups`` claim of the current request, so a group removed from the token
takes effect on the next request. ``tasks:admin`` sees every task of its tenant.

Writes that people make are conditional updates (``... WHERE id = :id AND version = :seen``): of two
concurrent claims the second waits for the first's row lock, re-evaluates its ``WHERE`` against the
committed row and updates nothing, which the service turns into a 409.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wf_platform.db import TENANT_SCHEMA, transaction_lock

__all__ = [
    "NO_DUE_DATE",
    "SORT_KEYS",
    "SortKey",
    "TaskEventRow",
    "TaskFilter",
    "TaskRepository",
    "TaskRow",
    "Visibility",
    "task_events",
    "task_tombstones",
    "tasks",
    "text_query",
    "visible_to",
]

_metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    _metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("instance_id", sa.Text, nullable=False),
    sa.Column("definition_name", sa.Text, nullable=False),
    sa.Column("definition_version", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("form_schema", pg.JSONB, nullable=False),
    sa.Column("ui_hints", pg.JSONB, nullable=False),
    sa.Column("context", pg.JSONB, nullable=False),
    sa.Column("assignee", sa.Text, nullable=True),
    sa.Column("candidate_users", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("candidate_groups", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("due_sort", sa.DateTime(timezone=True), nullable=False),
    sa.Column("follow_up_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("completed_by", sa.Text, nullable=True),
    sa.Column("completion_data", pg.JSONB, nullable=True),
    sa.Column("completion_comment", sa.Text, nullable=True),
    sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_reason", sa.Text, nullable=True),
    sa.Column("search", pg.TSVECTOR, nullable=False),
    schema=TENANT_SCHEMA,
)

task_events = sa.Table(
    "task_events",
    _metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("task_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("details", pg.JSONB, nullable=False),
    schema=TENANT_SCHEMA,
)

task_tombstones = sa.Table(
    "task_tombstones",
    _metadata,
    sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("instance_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    schema=TENANT_SCHEMA,
)

NO_DUE_DATE = datetime(9999, 12, 31, tzinfo=UTC)
"""``due_sort`` of a task without a due date: it sorts after every real date."""

SortKey = Literal["created", "due", "priority"]
SORT_KEYS: Mapping[SortKey, sa.Column[Any]] = {
    "created": tasks.c.created_at,
    "due": tasks.c.due_sort,
    "priority": tasks.c.priority,
}

Status = Literal["open", "claimed", "completed", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRow:
    """A stored task."""

    id: uuid.UUID
    instance_id: str
    definition_name: str
    definition_version: str
    step: str
    title: str
    description: str
    form_schema: dict[str, Any]
    ui_hints: dict[str, Any]
    context: dict[str, Any]
    assignee: str | None
    candidate_users: list[str]
    candidate_groups: list[str]
    priority: int
    due_at: datetime | None
    due_sort: datetime
    follow_up_at: datetime | None
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime
    claimed_at: datetime | None
    completed_at: datetime | None
    completed_by: str | None
    completion_data: dict[str, Any] | None
    completion_comment: str | None
    cancelled_at: datetime | None
    cancel_reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEventRow:
    """One entry of a task's audit trail."""

    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRow))
_COLUMNS = tuple(tasks.c[name] for name in _FIELDS)


def _task_row(row: Any) -> TaskRow:
    return TaskRow(**{name: getattr(row, name) for name in _FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True)
class Visibility:
    """Who is asking: the token's subject and groups; ``everything`` for ``tasks:admin``."""

    sub: str
    groups: frozenset[str]
    everything: bool = False


def visible_to(visibility: Visibility, /) -> sa.ColumnElement[bool]:
    """The SQL predicate "this caller may see this task" (GIN-indexable array operators)."""
    if visibility.everything:
        return sa.true()
    conditions: list[sa.ColumnElement[bool]] = [
        tasks.c.assignee == visibility.sub,
        tasks.c.candidate_users.contains(sa.cast([visibility.sub], pg.ARRAY(sa.Text))),
    ]
    if visibility.groups:
        conditions.append(
            tasks.c.candidate_groups.overlap(sa.cast(sorted(visibility.groups), pg.ARRAY(sa.Text)))
        )
    return sa.or_(*conditions)


_WORD = re.compile(r"\w+", re.UNICODE)


def text_query(q: str, /) -> str | None:
    """A ``to_tsquery('simple', ...)`` text: every word of ``q`` as a prefix (``inv`` finds ``invoice``).

    Only word characters survive, so nothing in ``q`` can be taken for tsquery syntax.
    """
    words = [w.lower() for w in _WORD.findall(q)][:8]
    if not words:
        return None
    return " & ".join(f"{w}:*" for w in words)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    """The filters, sort and page position of a task list."""

    statuses: tuple[Status, ...] = ()
    assignee: str | None = None
    unassigned: bool = False
    candidate_group: str | None = None
    candidate_user: str | None = None
    definition: str | None = None
    instance_id: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    priority: int | None = None
    priority_min: int | None = None
    q: str | None = None
    sort: SortKey = "created"
    descending: bool = True
    after: tuple[Any, uuid.UUID] | None = None
    """The keyset position: (sort value, id) of the last task of the previous page."""
    limit: int = 50


class TaskRepository:
    """Tasks of one tenant, on a connection whose tenant schema is mapped."""

    def __init__(self, conn: AsyncConnection, /) -> None:
        self.conn = conn

    # -- intake ----------------------------------------------------------------------------------

    async def insert_if_absent(self, values: Mapping[str, Any], /) -> bool:
        """Insert a new task; ``False`` when its id exists (a redelivered ``created``)."""
        stmt = (
            pg_insert(tasks)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[tasks.c.id])
            .returning(tasks.c.id)
        )
        return (await self.conn.execute(stmt)).first() is not None

    async def serialize_messages(self, task_id: uuid.UUID, /) -> None:
        """Until the transaction ends, hold the lock that orders the task's ``created`` and
        ``cancelled``. A fetched batch is applied concurrently and replicas share the consumer, so the
        two can be applied at once; without the lock each would miss the other's uncommitted row (no
        task yet: a tombstone; no tombstone yet: an open task) and the task would stay open. The
        lock is database-wide; the task id, a UUID, names it across tenants."""
        await transaction_lock(self.conn, f"wf.task:{task_id}")

    async def is_tombstoned(self, task_id: uuid.UUID, /) -> bool:
        """Whether the task was cancelled before it arrived."""
        stmt = sa.select(task_tombstones.c.task_id).where(task_tombstones.c.task_id == task_id)
        return (await self.conn.execute(stmt)).first() is not None

    async def add_tombstone(self, task_id: uuid.UUID, /, *, instance_id: str, reason: str) -> None:
        """Remember a cancellation that came before its task (idempotent)."""
        await self.conn.execute(
            pg_insert(task_tombstones)
            .values(task_id=task_id, instance_id=instance_id, reason=reason, at=sa.func.now())
            .on_conflict_do_nothing(index_elements=[task_tombstones.c.task_id])
        )

    async def lock(self, task_id: uuid.UUID, /) -> TaskRow | None:
        """The task, row-locked until the transaction ends (consumer updates)."""
        stmt = sa.select(*_COLUMNS).where(tasks.c.id == task_id).with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _task_row(row) if row is not None else None

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID, /, *, visibility: Visibility) -> TaskRow | None:
        """The task if the caller may see it."""
        stmt = sa.select(*_COLUMNS).where(tasks.c.id == task_id, visible_to(visibility))
        row = (await self.conn.execute(stmt)).first()
        return _task_row(row) if row is not None else None

    async def list(self, flt: TaskFilter, /, *, visibility: Visibility) -> list[TaskRow]:
        """One page (``limit + 1`` rows: the extra one says there is a next page)."""
        key = SORT_KEYS[flt.sort]
        conditions: list[sa.ColumnElement[bool]] = [visible_to(visibility)]
        if flt.statuses:
            conditions.append(
                tasks.c.status == flt.statuses[0]
                if len(flt.statuses) == 1
                else tasks.c.status.in_(flt.statuses)
            )
        if flt.assignee is not None:
            conditions.append(tasks.c.assignee == flt.assignee)
        if flt.unassigned:
            conditions.append(tasks.c.assignee.is_(None))
        if flt.candidate_group is not None:
            conditions.append(
                tasks.c.candidate_groups.contains(sa.cast([flt.candidate_group], pg.ARRAY(sa.Text)))
            )
        if flt.candidate_user is not None:
            conditions.append(
                tasks.c.candidate_users.contains(sa.cast([flt.candidate_user], pg.ARRAY(sa.Text)))
            )
        if flt.definition is not None:
            conditions.append(tasks.c.definition_name == flt.definition)
        if flt.instance_id is not None:
            conditions.append(tasks.c.instance_id == flt.instance_id)
        if flt.due_before is not None:
            conditions.append(tasks.c.due_at < flt.due_before)
        if flt.due_after is not None:
            conditions.append(tasks.c.due_at >= flt.due_after)
        if flt.priority is not None:
            conditions.append(tasks.c.priority == flt.priority)
        if flt.priority_min is not None:
            conditions.append(tasks.c.priority >= flt.priority_min)
        if flt.q:
            query = text_query(flt.q)
            if query is not None:
                conditions.append(tasks.c.search.op("@@")(sa.func.to_tsquery("simple", query)))
        if flt.after is not None:
            value, last_id = flt.after
            position = sa.tuple_(key, tasks.c.id)
            bound = sa.tuple_(sa.literal(value, key.type), sa.literal(last_id, tasks.c.id.type))
            conditions.append(position < bound if flt.descending else position > bound)
        order = (key.desc(), tasks.c.id.desc()) if flt.descending else (key.asc(), tasks.c.id.asc())
        stmt = sa.select(*_COLUMNS).where(*conditions).order_by(*order).limit(flt.limit + 1)
        rows = await self.conn.execute(stmt)
        return [_task_row(r) for r in rows]

    async def events(self, task_id: uuid.UUID, /) -> list[TaskEventRow]:
        """The audit trail, oldest first."""
        stmt = (
            sa.select(task_events.c.at, task_events.c.actor, task_events.c.action, task_events.c.details)
            .where(task_events.c.task_id == task_id)
            .order_by(task_events.c.id)
        )
        return [
            TaskEventRow(at=r.at, actor=r.actor, action=r.action, details=dict(r.details))
            for r in await self.conn.execute(stmt)
        ]

    # -- writes ----------------------------------------------------------------------------------

    async def update_if(
        self,
        task_id: uuid.UUID,
        /,
        *,
        version: int,
        statuses: Sequence[Status],
        values: Mapping[str, Any],
    ) -> TaskRow | None:
        """Update the task if it is still at ``version`` in one of ``statuses``; ``None`` otherwise.

        The version is bumped; ``updated_at`` is set to the transaction time.
        """
        stmt = (
            tasks.update()
            .where(tasks.c.id == task_id, tasks.c.version == version, tasks.c.status.in_(list(statuses)))
            .values(**values, version=tasks.c.version + 1, updated_at=sa.func.now())
            .returning(*_COLUMNS)
        )
        row = (await self.conn.execute(stmt)).first()
        return _task_row(row) if row is not None else None

    async def add_event(
        self, task_id: uuid.UUID, /, *, actor: str, action: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Append to the audit trail."""
        await self.conn.execute(
            task_events.insert().values(
                task_id=task_id, at=sa.func.now(), actor=actor, action=action, details=dict(details or {})
            )
        )
