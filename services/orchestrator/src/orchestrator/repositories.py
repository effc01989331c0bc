"""The only module that speaks SQL: instances, step attempts, stored definitions, timers.

Every method runs on the caller's unit of work in the tenant's schema (a transaction, or a
single-statement unit whose one write commits by itself); the timer table lives in the shared
``orch`` schema of the same database, so a timer and the state change it belongs to commit together.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.tables import definitions, instances, step_attempts, timers
from wf_platform.db import (
    OUTBOX_WRITE_COLUMNS,
    OUTBOX_WRITE_CTES,
    TENANT_SCHEMA,
    DriverStatement,
    OutboxColumns,
    OutboxWrite,
    outbox_columns,
    outbox_parameters,
)
from workflow_core import InstanceState

__all__ = [
    "AttemptRow",
    "DueTimer",
    "InstanceRepository",
    "InstanceRow",
    "NewInstance",
    "TimerRepository",
    "WriteConflict",
    "Writes",
]


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
class NewInstance:
    """An instance to store: its first state and what its start request said."""

    state: InstanceState
    trace_id: str | None
    traceparent: str | None
    idempotency_key: str | None
    request_digest: str | None
    """What a replay with the same idempotency key must match (only with a key)."""
    created_by: str

    def row(self) -> InstanceRow:
        """The instance as its start stores it (revision 1)."""
        state = self.state
        return InstanceRow(
            id=state.instance_id,
            definition=state.definition,
            version=state.version,
            status=state.status.value,
            business_key=state.business_key,
            state=state,
            revision=1,
            trace_id=self.trace_id,
            traceparent=self.traceparent,
            request_digest=self.request_digest,
            created_at=state.started_at,
            updated_at=state.updated_at,
            ended_at=state.ended_at,
        )


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
    state = row.state
    return InstanceRow(
        id=str(row.id),
        definition=row.definition,
        version=row.version,
        status=row.status,
        business_key=row.business_key,
        # Read as JSON text (see _STATE_TEXT): decoded straight into the struct, no dict detour.
        state=_decode_state(state) if isinstance(state, str) else msgspec.convert(state, InstanceState),
        revision=row.revision,
        trace_id=row.trace_id,
        traceparent=row.traceparent,
        request_digest=row.request_digest,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
    )


_decode_state = msgspec.json.Decoder(InstanceState).decode
_STATE_TEXT = sa.cast(instances.c.state, sa.Text).label("state")  # text on the wire: no jsonb codec
_INSTANCE_COLUMNS = [*(c for c in instances.c if c.name != "state"), _STATE_TEXT]
_UUIDS = pg.ARRAY(pg.UUID(as_uuid=False))


def _any(column: sa.ColumnElement[Any], name: str, /) -> sa.ColumnElement[bool]:
    """``column = ANY(:name)``: one bound array, so one cached statement for any number of values."""
    return column == sa.func.any(sa.bindparam(name, type_=_UUIDS))


# The hot statements are built once: SQLAlchemy then computes their cache keys once, not per call.
_LOCK = (
    sa.select(*_INSTANCE_COLUMNS)
    .where(_any(instances.c.id, "ids"))
    .order_by(instances.c.id)
    .with_for_update()
)
# Which instance each job belongs to: one index probe per job (LATERAL ... LIMIT 1). A plain
# ``job_id = ANY(:ids)`` on a young tenant table (no statistics yet, a few thousand rows) was
# planned as a sequential scan of every attempt: 7-15 ms per batch of results under load.
_WANTED_JOBS = (
    sa.func.unnest(sa.bindparam("ids", type_=_UUIDS)).table_valued("job_id").render_derived(name="wanted")
)
_OWNER = (
    sa.select(step_attempts.c.instance_id)
    .where(step_attempts.c.job_id == _WANTED_JOBS.c.job_id)
    .limit(1)
    .lateral("owner")
)
_OWNERS = (
    sa.select(_OWNER.c.instance_id, sa.func.array_agg(_WANTED_JOBS.c.job_id).label("job_ids"))
    .select_from(_WANTED_JOBS.join(_OWNER, sa.true()))
    .group_by(_OWNER.c.instance_id)
    .subquery("owners")
)
_LOCK_JOBS = (
    sa.select(*_INSTANCE_COLUMNS, _OWNERS.c.job_ids)
    .select_from(_OWNERS.join(instances, instances.c.id == _OWNERS.c.instance_id))
    .order_by(instances.c.id)
    .with_for_update(of=instances)
)
_encode_json = msgspec.json.Encoder().encode


def _json_text(value: Any, /) -> str | None:
    """JSON for a ``jsonb[]`` element (asyncpg's jsonb codec takes text, not objects)."""
    return None if value is None else _encode_json(value).decode()


# Parameter suffix -> the row key it is read from (rows as one array per column, for unnest).
_ATTEMPT_COLUMNS = {
    "job": "job_id",
    "attempt": "attempt",
    "instance": "instance_id",
    "step": "step",
    "type": "step_type",
    "status": "status",
    "at": "dispatched_at",
    "deadline": "deadline",
    "finished": "finished_at",
    "worker": "worker",
    "error": "error",
}
_FINISH_COLUMNS = {
    "job": "job_id",
    "attempt": "attempt",
    "status": "status",
    "at": "finished_at",
    "worker": "worker",
    "error": "error",
}
_TIMER_COLUMNS = {
    "id": "timer_id",
    "tenant": "tenant_id",
    "instance": "instance_id",
    "kind": "kind",
    "due": "due_at",
}
_JSON_KEYS = frozenset({"error"})


def _arrays(
    prefix: str, rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str], /
) -> dict[str, list[Any]]:
    """``rows`` as one array per column, named ``<prefix>_<suffix>`` (JSON columns as text)."""
    listed = list(rows)
    return {
        f"{prefix}_{suffix}": [_json_text(r[key]) for r in listed]
        if key in _JSON_KEYS
        else [r[key] for r in listed]
        for suffix, key in columns.items()
    }


class WriteConflict(Exception):  # noqa: N818 - a condition to handle, not a failure
    """A write found an instance no longer at the revision it was read at, or a start's idempotency
    key taken: the statement wrote nothing."""


_WRITE_CONFLICT_SQLSTATE = "WF409"
"""Raised by ``orch.write_guard`` (shared migration 0002)."""


def _quoted(schema: str, /) -> str:
    return '"' + schema.replace('"', '""') + '"'


# The statements' parts. Rows go as arrays (``unnest``), so one prepared statement serves any
# number of them; data-modifying CTEs all run whatever the final SELECT reads.
_UPDATED = """in_order AS MATERIALIZED (
    SELECT id FROM {tenant}.instances WHERE id = ANY(CAST(:i_id AS uuid[])) ORDER BY id FOR UPDATE
),
updated AS (
    UPDATE {tenant}.instances AS i
    SET status = v.status, state = v.state, revision = v.revision,
        updated_at = v.updated_at, ended_at = v.ended_at
    FROM unnest(
        CAST(:i_id AS uuid[]), CAST(:i_locked AS integer[]), CAST(:i_status AS text[]),
        CAST(:i_state AS jsonb[]), CAST(:i_revision AS integer[]),
        CAST(:i_updated AS timestamptz[]), CAST(:i_ended AS timestamptz[])
    ) AS v(id, locked, status, state, revision, updated_at, ended_at)
    WHERE i.id = v.id AND i.revision = v.locked AND i.id IN (SELECT id FROM in_order)
    RETURNING 1
)"""
"""``in_order`` takes the row locks in id order, as every transaction's lock query does
(:meth:`InstanceRepository.lock`): a statement that writes states it did not lock first
(:mod:`orchestrator.instance_cache`) would otherwise lock them in whatever order the join visits
them and deadlock with a transaction holding some of them."""
_INSERTED = """inserted AS (
    INSERT INTO {tenant}.instances (id, definition, version, status, business_key, state, revision,
        trace_id, traceparent, idempotency_key, request_digest, created_by, created_at, updated_at,
        ended_at)
    SELECT id, definition, version, status, business_key, state, 1, trace_id, traceparent,
        idempotency_key, request_digest, created_by, created_at, updated_at, ended_at
    FROM unnest(
        CAST(:n_id AS uuid[]), CAST(:n_definition AS text[]), CAST(:n_version AS text[]),
        CAST(:n_status AS text[]), CAST(:n_business_key AS text[]), CAST(:n_state AS jsonb[]),
        CAST(:n_trace_id AS text[]), CAST(:n_traceparent AS text[]), CAST(:n_key AS text[]),
        CAST(:n_digest AS text[]), CAST(:n_created_by AS text[]), CAST(:n_created AS timestamptz[]),
        CAST(:n_updated AS timestamptz[]), CAST(:n_ended AS timestamptz[])
    ) AS v(id, definition, version, status, business_key, state, trace_id, traceparent,
        idempotency_key, request_digest, created_by, created_at, updated_at, ended_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING 1
)"""
_ADDED = """added AS (
    INSERT INTO {tenant}.step_attempts (job_id, attempt, instance_id, step, step_type,
        status, dispatched_at, deadline, finished_at, worker, error)
    SELECT * FROM unnest(
        CAST(:a_job AS uuid[]), CAST(:a_attempt AS integer[]), CAST(:a_instance AS uuid[]),
        CAST(:a_step AS text[]), CAST(:a_type AS text[]), CAST(:a_status AS text[]),
        CAST(:a_at AS timestamptz[]), CAST(:a_deadline AS timestamptz[]),
        CAST(:a_finished AS timestamptz[]), CAST(:a_worker AS text[]), CAST(:a_error AS jsonb[])
    )
    ON CONFLICT DO NOTHING
    RETURNING 1
)"""
_FINISHED = """finished AS (
    UPDATE {tenant}.step_attempts AS a
    SET status = v.status, finished_at = v.finished_at, worker = v.worker, error = v.error
    FROM unnest(
        CAST(:f_job AS uuid[]), CAST(:f_attempt AS integer[]), CAST(:f_status AS text[]),
        CAST(:f_at AS timestamptz[]), CAST(:f_worker AS text[]), CAST(:f_error AS jsonb[])
    ) AS v(job_id, attempt, status, finished_at, worker, error)
    WHERE a.job_id = v.job_id AND a.attempt = v.attempt
    RETURNING 1
)"""
_DISARMED = """disarmed AS (
    DELETE FROM {timers} WHERE timer_id = ANY(CAST(:t_deleted AS uuid[]))
    RETURNING 1
)"""
_ARMED = """armed AS (
    INSERT INTO {timers} (timer_id, tenant_id, instance_id, kind, due_at)
    SELECT * FROM unnest(
        CAST(:t_id AS uuid[]), CAST(:t_tenant AS text[]), CAST(:t_instance AS uuid[]),
        CAST(:t_kind AS text[]), CAST(:t_due AS timestamptz[])
    )
    ON CONFLICT (timer_id) DO UPDATE
        SET tenant_id = excluded.tenant_id, instance_id = excluded.instance_id,
            kind = excluded.kind, due_at = excluded.due_at
    RETURNING 1
)"""


def _statement(schema: str, parts: Sequence[str], guard: str, /) -> DriverStatement:
    """``WITH <parts>, <outbox> SELECT <guard>, <outbox ids>``: the guard (a condition on the
    parts' results) fails the whole statement with :class:`WriteConflict` when false. A
    :class:`~wf_platform.db.DriverStatement`: it writes everything its unit changed."""
    ctes = [part.format(tenant=_quoted(schema), timers=f"{timers.schema}.{timers.name}") for part in parts]
    return DriverStatement(
        sa.text(
            f"WITH {', '.join(ctes)}, {OUTBOX_WRITE_CTES}\n"
            f"SELECT {timers.schema}.write_guard({guard}) AS guard, {OUTBOX_WRITE_COLUMNS}"
        )
    )


@functools.lru_cache(maxsize=1024)  # one per tenant schema; rebuilt cheaply past that
def _write_statement(schema: str, /) -> DriverStatement:
    """Everything a transition writes, as one statement (one round trip): the instances' new
    states, the attempts dispatched and finished, the timers disarmed and armed, the outbox rows.

    Every instance is updated only at the revision it was locked at, else nothing is
    written (:class:`WriteConflict`). A timer is never both disarmed and armed here (``Writes``
    cancels the two out), nor an attempt both added and finished. The outbox rows are wf_platform's
    fragment (:data:`~wf_platform.db.OUTBOX_WRITE_CTES`): their ids come back, and the unsent rows of
    the same keys written before, for the relay's fast path. ``schema`` is a tenant schema
    name (validated, and quoted here); the timers and the outbox are in the shared schemas.
    """
    return _statement(
        schema,
        (_UPDATED, _ADDED, _FINISHED, _DISARMED, _ARMED),
        "(SELECT count(*) FROM updated) = cardinality(CAST(:i_id AS uuid[]))",
    )


@functools.lru_cache(maxsize=1024)
def _start_statement(schema: str, /) -> DriverStatement:
    """New instances with their first attempts, timers and outbox rows, as one statement; nothing
    is written (:class:`WriteConflict`) when an idempotency key is already taken."""
    return _statement(
        schema,
        (_INSERTED, _ADDED, _ARMED),
        "(SELECT count(*) FROM inserted) = cardinality(CAST(:n_id AS uuid[]))",
    )


@dataclass(slots=True)
class Writes:
    """The rows one transaction's transitions write, flushed together by :meth:`InstanceRepository.write`.

    ``instances`` maps an instance to (its revision when locked, its revision now, its state now).
    An attempt finished in the transaction that added it is written once, finished; a timer added
    and cancelled in one transaction is never written.
    """

    instances: dict[str, tuple[int, int, InstanceState]] = field(
        default_factory=dict[str, tuple[int, int, InstanceState]]
    )
    attempts_added: dict[tuple[str, int], dict[str, Any]] = field(
        default_factory=dict[tuple[str, int], dict[str, Any]]
    )
    attempts_finished: dict[tuple[str, int], dict[str, Any]] = field(
        default_factory=dict[tuple[str, int], dict[str, Any]]
    )
    timers_added: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    timers_deleted: set[str] = field(default_factory=set[str])

    @property
    def empty(self) -> bool:
        """Nothing to write."""
        return not (
            self.instances
            or self.attempts_added
            or self.attempts_finished
            or self.timers_added
            or self.timers_deleted
        )

    def update(self, state: InstanceState, /, *, locked_revision: int, revision: int) -> None:
        """The instance's new state (``revision``: its number after this change)."""
        known = self.instances.get(state.instance_id)
        self.instances[state.instance_id] = (known[0] if known else locked_revision, revision, state)

    def add_attempt(
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
        self.attempts_added[(job_id, attempt)] = {
            "job_id": job_id,
            "attempt": attempt,
            "instance_id": instance_id,
            "step": step,
            "step_type": step_type,
            "status": "dispatched",
            "dispatched_at": at,
            "deadline": deadline,
            "finished_at": None,
            "worker": None,
            "error": None,
        }

    def finish_attempt(
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
        outcome: dict[str, Any] = {"status": status, "finished_at": at, "worker": worker, "error": error}
        added = self.attempts_added.get((job_id, attempt))
        if added is not None:
            added.update(outcome)
        else:
            self.attempts_finished[(job_id, attempt)] = {"job_id": job_id, "attempt": attempt, **outcome}

    def add_timer(self, *, timer_id: str, tenant: str, instance_id: str, kind: str, due_at: datetime) -> None:
        """Arm a durable timer."""
        self.timers_deleted.discard(timer_id)
        self.timers_added[timer_id] = {
            "timer_id": timer_id,
            "tenant_id": tenant,
            "instance_id": instance_id,
            "kind": kind,
            "due_at": due_at,
        }

    def delete_timer(self, timer_id: str, /) -> None:
        """Disarm a timer."""
        if self.timers_added.pop(timer_id, None) is None:
            self.timers_deleted.add(timer_id)


class InstanceRepository:
    """Instances and what belongs to them, in one tenant's schema."""

    def __init__(self, conn: AsyncConnection, /) -> None:
        self.conn = conn

    @property
    def schema(self) -> str:
        """The tenant schema the connection's tables resolve to (for statements written as text)."""
        connection = self.conn.sync_connection
        assert connection is not None, "the connection is open while its unit of work runs"
        options: Mapping[str, Any] = connection.get_execution_options()
        mapping: Mapping[str | None, str] = options.get("schema_translate_map") or {}
        return mapping[TENANT_SCHEMA]

    async def by_idempotency_key(self, key: str, /) -> InstanceRow | None:
        """The instance started with this key, if any."""
        row = (
            await self.conn.execute(sa.select(*_INSTANCE_COLUMNS).where(instances.c.idempotency_key == key))
        ).first()
        return _row(row) if row is not None else None

    async def get(self, instance_id: str, /) -> InstanceRow | None:
        """The instance (not locked: :meth:`lock` is for changing it)."""
        row = (
            await self.conn.execute(sa.select(*_INSTANCE_COLUMNS).where(instances.c.id == instance_id))
        ).first()
        return _row(row) if row is not None else None

    async def lock(self, instance_ids: Sequence[str], /) -> dict[str, InstanceRow]:
        """Lock these instances (``FOR UPDATE``, in id order so two batches cannot deadlock)."""
        rows = await self.conn.execute(_LOCK, {"ids": list(instance_ids)})
        return {str(r.id): _row(r) for r in rows}

    async def lock_jobs(self, job_ids: Sequence[str], /) -> tuple[dict[str, str], dict[str, InstanceRow]]:
        """Lock the instances these jobs belong to (job ids must be UUIDs), with one query.

        Returns which instance each known job belongs to, and the locked instances.
        """
        jobs: dict[str, str] = {}
        locked: dict[str, InstanceRow] = {}
        for r in await self.conn.execute(_LOCK_JOBS, {"ids": list(job_ids)}):
            row = locked[str(r.id)] = _row(r)
            jobs.update(dict.fromkeys(map(str, r.job_ids), row.id))
        return jobs, locked

    async def write(self, writes: Writes, outbox: OutboxWrite, /) -> OutboxColumns:
        """Flush a unit of work's writes and its outbox rows (:meth:`UnitOfWork.take_outbox`) with
        one statement, whatever their number (see :func:`_write_statement`).

        Returns:
            What :meth:`UnitOfWork.outbox_written` takes: the outbox ids, the older unsent ids, the
            ids marked sent.

        Raises:
            WriteConflict: an instance was no longer at the revision it was locked at; nothing was
                written (cannot happen while the lock is held; checked because a lost update
                would be silent).
        """
        if writes.empty and not outbox.messages:
            return [], [], []  # the lent marks go back to the relay (never sent)
        states = writes.instances.items()
        return await self._guarded(
            _write_statement(self.schema),
            {
                "i_id": [instance_id for instance_id, _ in states],
                "i_locked": [locked for _, (locked, _, _) in states],
                "i_status": [state.status.value for _, (_, _, state) in states],
                "i_state": [_json_text(state) for _, (_, _, state) in states],
                "i_revision": [revision for _, (_, revision, _) in states],
                "i_updated": [state.updated_at for _, (_, _, state) in states],
                "i_ended": [state.ended_at for _, (_, _, state) in states],
                **_arrays("a", writes.attempts_added.values(), _ATTEMPT_COLUMNS),
                **_arrays("f", writes.attempts_finished.values(), _FINISH_COLUMNS),
                "t_deleted": sorted(writes.timers_deleted),
                **_arrays("t", writes.timers_added.values(), _TIMER_COLUMNS),
                **outbox_parameters(outbox),
            },
        )

    async def start(
        self, starts: Sequence[NewInstance], writes: Writes, outbox: OutboxWrite, /
    ) -> OutboxColumns:
        """Store new instances with what their start causes (``writes``: attempts and timers, no
        instance updates) and their outbox rows, with one statement (see :func:`_start_statement`).

        Returns:
            What :meth:`UnitOfWork.outbox_written` takes.

        Raises:
            WriteConflict: an idempotency key was taken; nothing was written.
        """
        if writes.instances or writes.attempts_finished or writes.timers_deleted:
            raise ValueError("a start only adds instances, attempts and timers")
        return await self._guarded(
            _start_statement(self.schema),
            {
                "n_id": [s.state.instance_id for s in starts],
                "n_definition": [s.state.definition for s in starts],
                "n_version": [s.state.version for s in starts],
                "n_status": [s.state.status.value for s in starts],
                "n_business_key": [s.state.business_key for s in starts],
                "n_state": [_json_text(s.state) for s in starts],
                "n_trace_id": [s.trace_id for s in starts],
                "n_traceparent": [s.traceparent for s in starts],
                "n_key": [s.idempotency_key for s in starts],
                "n_digest": [s.request_digest for s in starts],
                "n_created_by": [s.created_by for s in starts],
                "n_created": [s.state.started_at for s in starts],
                "n_updated": [s.state.updated_at for s in starts],
                "n_ended": [s.state.ended_at for s in starts],
                **_arrays("a", writes.attempts_added.values(), _ATTEMPT_COLUMNS),
                **_arrays("t", writes.timers_added.values(), _TIMER_COLUMNS),
                **outbox_parameters(outbox),
            },
        )

    async def _guarded(self, statement: DriverStatement, parameters: dict[str, Any], /) -> OutboxColumns:
        try:
            row = await statement.fetchrow(self.conn, parameters)
        except Exception as exc:  # asyncpg's errors (a Postgres error carries its SQLSTATE)
            if getattr(exc, "sqlstate", None) == _WRITE_CONFLICT_SQLSTATE:
                raise WriteConflict(str(exc)) from None
            raise
        return outbox_columns(row)

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
