"""The only module that speaks SQL: instances, step attempts, stored definitions, timers.

Every method runs on the caller's unit of work (one transaction in the tenant's schema); the
timer table lives in the shared ``orch`` schema of the same database, so a timer and the state
change it belongs to commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.tables import definitions, instances, step_attempts, timers
from workflow_core import InstanceState

__all__ = ["AttemptRow", "DueTimer", "InstanceRepository", "InstanceRow", "TimerRepository"]


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """An instance as stored."""

    id: str
    definition: str
    version: str
    status: str
    business_key: str | None
    state: InstanceState
    revision: int
    trace_id: str | None
    traceparent: str | None
    request_digest: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One machine step attempt."""

    job_id: str
    attempt: int
    step: str
    step_type: str
    status: str
    dispatched_at: datetime
    deadline: datetime | None
    finished_at: datetime | None
    worker: str | None
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A timer that came due."""

    timer_id: str
    tenant_id: str
    instance_id: str
    kind: str


def _row(row: Any) -> InstanceRow:
    return InstanceRow(
        id=str(row.id),
        definition=row.definition,
        version=row.version,
        status=row.status,
        business_key=row.business_key,
        state=msgspec.convert(row.state, InstanceState),
        revision=row.revision,
        trace_id=row.trace_id,
        traceparent=row.traceparent,
        request_digest=row.request_digest,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
    )


class InstanceRepository:
    """Instances and what belongs to them, in one tenant's schema."""

    def __init__(self, conn: AsyncConnection, /) -> None:
        self.conn = conn

    async def insert(
        self,
        state: InstanceState,
        /,
        *,
        trace_id: str | None,
        traceparent: str | None,
        idempotency_key: str | None,
        request_digest: str | None,
        created_by: str,
    ) -> bool:
        """Store a new instance; False when the idempotency key is already taken (nothing stored)."""
        values = {
            "id": state.instance_id,
            "definition": state.definition,
            "version": state.version,
            "status": state.status.value,
            "business_key": state.business_key,
            "state": msgspec.to_builtins(state),
            "revision": 1,
            "trace_id": trace_id,
            "traceparent": traceparent,
            "idempotency_key": idempotency_key,
            "request_digest": request_digest,
            "created_by": created_by,
            "created_at": state.started_at,
            "updated_at": state.updated_at,
            "ended_at": state.ended_at,
        }
        statement = pg.insert(instances).values(values)
        if idempotency_key is not None:
            statement = statement.on_conflict_do_nothing(index_elements=[instances.c.idempotency_key])
        result = await self.conn.execute(statement.returning(instances.c.id))
        return result.first() is not None

    async def by_idempotency_key(self, key: str, /) -> InstanceRow | None:
        """The instance started with this key, if any."""
        row = (
            await self.conn.execute(sa.select(instances).where(instances.c.idempotency_key == key))
        ).first()
        return _row(row) if row is not None else None

    async def get(self, instance_id: str, /, *, lock: bool = False) -> InstanceRow | None:
        """The instance (``lock``: ``FOR UPDATE``, held until the transaction ends)."""
        statement = sa.select(instances).where(instances.c.id == instance_id)
        if lock:
            statement = statement.with_for_update()
        row = (await self.conn.execute(statement)).first()
        return _row(row) if row is not None else None

    async def update(self, state: InstanceState, /, *, revision: int) -> None:
        """Store the state after a transition (the row is locked by this transaction)."""
        await self.conn.execute(
            instances.update()
            .where(instances.c.id == state.instance_id, instances.c.revision == revision)
            .values(
                status=state.status.value,
                state=msgspec.to_builtins(state),
                revision=revision + 1,
                updated_at=state.updated_at,
                ended_at=state.ended_at,
            )
        )

    async def list(
        self,
        *,
        status: str | None,
        definition: str | None,
        business_key: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Any]:
        """Instances newest first, keyset-paginated on (created_at, id)."""
        columns = [
            instances.c.id,
            instances.c.definition,
            instances.c.version,
            instances.c.status,
            instances.c.business_key,
            instances.c.trace_id,
            instances.c.created_at,
            instances.c.updated_at,
            instances.c.ended_at,
        ]
        statement = sa.select(*columns)
        if status is not None:
            statement = statement.where(instances.c.status == status)
        if definition is not None:
            statement = statement.where(instances.c.definition == definition)
        if business_key is not None:
            statement = statement.where(instances.c.business_key == business_key)
        if after is not None:
            position = sa.tuple_(
                sa.literal(after[0], sa.DateTime(timezone=True)), sa.literal(after[1], pg.UUID(as_uuid=False))
            )
            statement = statement.where(sa.tuple_(instances.c.created_at, instances.c.id) < position)
        statement = statement.order_by(instances.c.created_at.desc(), instances.c.id.desc()).limit(limit)
        return (await self.conn.execute(statement)).all()

    # -- step attempts ---------------------------------------------------------------------------

    async def add_attempt(
        self,
        *,
        job_id: str,
        attempt: int,
        instance_id: str,
        step: str,
        step_type: str,
        at: datetime,
        deadline: datetime | None,
    ) -> None:
        """Record a dispatched attempt."""
        await self.conn.execute(
            pg.insert(step_attempts)
            .values(
                job_id=job_id,
                attempt=attempt,
                instance_id=instance_id,
                step=step,
                step_type=step_type,
                status="dispatched",
                dispatched_at=at,
                deadline=deadline,
            )
            .on_conflict_do_nothing()
        )

    async def finish_attempt(
        self,
        *,
        job_id: str,
        attempt: int,
        status: str,
        at: datetime,
        worker: str | None,
        error: dict[str, Any] | None,
    ) -> None:
        """Record an attempt's outcome (``completed``, ``failed``, ``timed_out``, ``abandoned``)."""
        await self.conn.execute(
            step_attempts.update()
            .where(step_attempts.c.job_id == job_id, step_attempts.c.attempt == attempt)
            .values(status=status, finished_at=at, worker=worker, error=error)
        )

    async def instance_of_job(self, job_id: str, /) -> str | None:
        """Which instance a job belongs to (in this tenant)."""
        row = (
            await self.conn.execute(
                sa.select(step_attempts.c.instance_id).where(step_attempts.c.job_id == job_id).limit(1)
            )
        ).first()
        return str(row.instance_id) if row is not None else None

    async def attempts(self, instance_id: str, /) -> list[AttemptRow]:
        """Every attempt of an instance, oldest first."""
        rows = (
            await self.conn.execute(
                sa.select(step_attempts)
                .where(step_attempts.c.instance_id == instance_id)
                .order_by(step_attempts.c.dispatched_at, step_attempts.c.attempt)
            )
        ).all()
        return [
            AttemptRow(
                job_id=str(r.job_id),
                attempt=r.attempt,
                step=r.step,
                step_type=r.step_type,
                status=r.status,
                dispatched_at=r.dispatched_at,
                deadline=r.deadline,
                finished_at=r.finished_at,
                worker=r.worker,
                error=r.error,
            )
            for r in rows
        ]

    # -- stored definitions ----------------------------------------------------------------------

    async def store_definition(self, *, name: str, version: str, digest: str, wire: dict[str, Any]) -> None:
        """Keep a definition version's wire form (immutable: a second store changes nothing)."""
        await self.conn.execute(
            pg.insert(definitions)
            .values(name=name, version=version, digest=digest, wire=wire)
            .on_conflict_do_nothing()
        )

    async def stored_definition(self, name: str, version: str, /) -> dict[str, Any] | None:
        """A stored definition's wire form."""
        row = (
            await self.conn.execute(
                sa.select(definitions.c.wire).where(
                    definitions.c.name == name, definitions.c.version == version
                )
            )
        ).first()
        return dict(row.wire) if row is not None else None

    # -- timers (shared table, same transaction) -------------------------------------------------

    async def add_timer(
        self, *, timer_id: str, tenant: str, instance_id: str, kind: str, due_at: datetime
    ) -> None:
        """Arm a durable timer."""
        await self.conn.execute(
            pg.insert(timers)
            .values(timer_id=timer_id, tenant_id=tenant, instance_id=instance_id, kind=kind, due_at=due_at)
            .on_conflict_do_nothing()
        )

    async def delete_timer(self, timer_id: str, /) -> None:
        """Disarm a timer."""
        await self.conn.execute(timers.delete().where(timers.c.timer_id == timer_id))

    async def claim_timer(self, timer_id: str, /) -> bool:
        """Take a due timer for this transaction (False if another process holds or took it)."""
        locked = (
            sa.select(timers.c.timer_id)
            .where(timers.c.timer_id == timer_id)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = await self.conn.execute(
            timers.delete().where(timers.c.timer_id == locked).returning(timers.c.timer_id)
        )
        return result.first() is not None


class TimerRepository:
    """The scan for due timers (outside any tenant)."""

    def __init__(self, engine: AsyncEngine, /) -> None:
        self.engine = engine

    async def due(self, now: datetime, /, *, limit: int) -> list[DueTimer]:
        """Timers due at ``now``, soonest first (not locked: each is claimed in its own transaction)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(timers.c.timer_id, timers.c.tenant_id, timers.c.instance_id, timers.c.kind)
                    .where(timers.c.due_at <= now)
                    .order_by(timers.c.due_at)
                    .limit(limit)
                )
            ).all()
        return [DueTimer(str(r.timer_id), r.tenant_id, str(r.instance_id), r.kind) for r in rows]

    async def next_due(self) -> datetime | None:
        """When the soonest timer is due."""
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.min(timers.c.due_at)))).scalar()
