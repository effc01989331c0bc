"""The rules of the instance API: start (idempotent), read, list, history, graph, cancel, retry, signal.

Controllers convert HTTP to these calls; SQL stays in repositories.py; every state change goes
through :class:`~orchestrator.runtime.Runtime` in one tenant transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from orchestrator.definitions import DefinitionCache, RegistryClient
from orchestrator.errors import (
    IdempotencyConflictError,
    InputTooLargeError,
    InstanceEndedError,
    InstanceNotFoundError,
    NoIncidentError,
)
from orchestrator.repositories import AttemptRow, InstanceRepository, InstanceRow, NewInstance
from orchestrator.runtime import Runtime, trace_id_of
from orchestrator.starts import PendingStart
from wf_platform.auth import Caller
from wf_platform.db import TenantDatabase
from wf_platform.problems import BadRequestError, FieldError, UnprocessableError
from wf_platform.telemetry import inject_trace_headers, tracer
from workflow_core import InstanceNotActiveError, InstanceState, Version
from workflow_core import NoIncidentError as EngineNoIncidentError
from workflow_core.mermaid import instance_to_mermaid
from workflow_core.models import CancelRequested, Event, RetryRequested, SignalReceived, Started, StepStatus
from workflow_core.validation import DEFINITION_NAME, SIGNAL_NAME

__all__ = [
    "ActiveStep",
    "HistoryView",
    "InstanceList",
    "InstanceService",
    "InstanceSummary",
    "InstanceView",
    "StartInstance",
]


class StartInstance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/instances``. Server-owned fields (id, status, ...) are refused, not ignored."""

    definition: str
    version: str | None = None
    input: dict[str, Any] = {}
    business_key: str | None = None


class ActiveStep(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A step with a live activation."""

    step: str
    kind: str
    status: str
    since: datetime
    attempt: int = 0
    job_id: str | None = None
    task_id: str | None = None
    deadline: datetime | None = None
    signal: str | None = None


class IncidentView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An open incident."""

    id: str
    step: str
    kind: str
    message: str
    at: datetime
    error: dict[str, Any] | None = None


class InstanceView(msgspec.Struct, frozen=True, kw_only=True):
    """An instance with its context data, active steps and incidents."""

    id: str
    definition: str
    version: str
    status: str
    business_key: str | None
    trace_id: str | None
    data: dict[str, Any]
    active_steps: list[ActiveStep]
    incidents: list[IncidentView]
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    cancel_reason: str | None = None


class InstanceSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the instance list."""

    id: str
    definition: str
    version: str
    status: str
    business_key: str | None
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


class InstanceList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of instances, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[InstanceSummary]
    next_cursor: str | None


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    """One machine step attempt."""

    step: str
    step_type: str
    job_id: str
    attempt: int
    outcome: str
    dispatched_at: datetime
    deadline: datetime | None
    finished_at: datetime | None
    worker: str | None
    error: dict[str, Any] | None


class StepEventView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the engine's step history (every kind of step)."""

    step: str
    kind: str
    status: str
    at: datetime
    attempt: int = 0
    job_id: str | None = None
    task_id: str | None = None
    user: str | None = None
    error: dict[str, Any] | None = None


class HistoryView(msgspec.Struct, frozen=True, kw_only=True):
    """Every machine step attempt, and every step event in order."""

    instance_id: str
    attempts: list[AttemptView]
    steps: list[StepEventView]


class GraphView(msgspec.Struct, frozen=True, kw_only=True):
    """The instance's definition as Mermaid, with completed, active and failed steps marked."""

    instance_id: str
    format: Literal["mermaid"]
    mermaid: str


def _view(row: InstanceRow) -> InstanceView:
    state = row.state
    return InstanceView(
        id=row.id,
        definition=row.definition,
        version=row.version,
        status=state.status.value,
        business_key=row.business_key,
        trace_id=row.trace_id,
        data=state.data,
        active_steps=[
            ActiveStep(
                step=a.node,
                kind=a.kind.value,
                status=a.status.value,
                since=a.started_at,
                attempt=a.attempt,
                job_id=a.job_id if a.status is not StepStatus.INCIDENT or a.job_id else None,
                task_id=a.task_id,
                deadline=a.deadline,
                signal=a.signal,
            )
            for a in state.activations
        ],
        incidents=[
            IncidentView(
                id=i.id,
                step=i.node,
                kind=i.kind,
                message=i.message,
                at=i.at,
                error=msgspec.to_builtins(i.error) if i.error is not None else None,
            )
            for i in state.incidents
        ],
        created_at=row.created_at,
        updated_at=state.updated_at,
        ended_at=state.ended_at,
        cancel_reason=state.cancel_reason,
    )


def _digest(request: StartInstance) -> str:
    canonical = json.dumps(msgspec.to_builtins(request), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(created_at: datetime, instance_id: str) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{instance_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position an opaque cursor names (400 when it is not one of ours)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, instance_id = raw.split("|", 1)
        return datetime.fromisoformat(when), str(uuid.UUID(instance_id))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError("invalid cursor", code="invalid_cursor") from exc


class InstanceService:
    """The instance API's rules for one caller."""

    def __init__(
        self,
        tenant_db: TenantDatabase,
        caller: Caller,
        runtime: Runtime,
        registry: RegistryClient,
        cache: DefinitionCache,
        *,
        max_input_bytes: int,
        max_context_bytes: int = 1_048_576,
    ) -> None:
        self.db = tenant_db
        self.caller = caller
        self.runtime = runtime
        self.registry = registry
        self.cache = cache
        self.max_input_bytes = max_input_bytes
        self.max_context_bytes = max_context_bytes

    async def start(
        self, request: StartInstance, /, *, token: str, idempotency_key: str | None
    ) -> InstanceView:
        """Start an instance (or return the one this idempotency key already started)."""
        size = len(msgspec.json.encode(request.input))
        if size > self.max_input_bytes:
            raise InputTooLargeError(size, self.max_input_bytes)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise UnprocessableError(
                "invalid Idempotency-Key",
                errors=[FieldError(path="header.Idempotency-Key", message="1 to 200 characters")],
            )
        problems: list[FieldError] = []
        if not DEFINITION_NAME.fullmatch(request.definition):
            problems.append(FieldError(path="definition", message="not a definition name"))
        if request.version is not None and not Version.is_valid(request.version):
            problems.append(FieldError(path="version", message="not a semantic version"))
        if problems:
            raise UnprocessableError("invalid start request", errors=problems)
        digest: str | None = None
        if idempotency_key is not None:
            digest = _digest(request)
            existing = await self._replay(idempotency_key, digest)
            if existing is not None:
                return existing
        tenant = self.caller.tenant
        resolved = await self.registry.resolve(tenant, request.definition, request.version, token=token)
        _, machine = self.cache.get(tenant, resolved.name, resolved.version) or self.cache.put(
            tenant, resolved.wire
        )
        instance_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with tracer().start_as_current_span(
            f"workflow {resolved.name}",
            attributes={"wf.tenant": tenant, "wf.instance_id": instance_id, "wf.definition": resolved.name},
        ) as span:
            traceparent = inject_trace_headers({}).get("traceparent")
            transition = machine.apply(
                None,
                Started(
                    at=now,
                    instance_id=instance_id,
                    input=request.input,
                    tenant_id=tenant,
                    user_id=self.caller.sub,
                    business_key=request.business_key,
                ),
            )
            state = transition.state
            pending = PendingStart(
                instance=NewInstance(
                    state=state,
                    trace_id=trace_id_of(span),
                    traceparent=traceparent,
                    idempotency_key=idempotency_key,
                    request_digest=digest,
                    created_by=self.caller.sub,
                ),
                commands=transition.commands,
                definition=None
                if self.cache.is_stored(tenant, resolved.name, resolved.version)
                else (resolved.name, resolved.version, resolved.digest, resolved.wire),
            )
            if not await self.runtime.starts.submit(self.db, pending):
                assert idempotency_key is not None and digest is not None
                existing = await self._replay(idempotency_key, digest)
                assert existing is not None
                return existing
            self.cache.mark_stored(tenant, resolved.name, resolved.version)
        # The instance as just committed: no second transaction to read it back.
        return _view(pending.instance.row())

    async def _replay(self, key: str, digest: str) -> InstanceView | None:
        async with self.db.transaction() as uow:
            row = await InstanceRepository(uow.conn).by_idempotency_key(key)
        if row is None:
            return None
        if row.request_digest != digest:
            raise IdempotencyConflictError(key)
        return _view(row)

    async def _row(self, instance_id: str) -> InstanceRow:
        try:
            uuid.UUID(instance_id)
        except ValueError as exc:
            raise InstanceNotFoundError(instance_id) from exc
        async with self.db.transaction() as uow:
            row = await InstanceRepository(uow.conn).get(instance_id)
        if row is None:
            raise InstanceNotFoundError(instance_id)
        return row

    async def get(self, instance_id: str, /) -> InstanceView:
        """One instance of the caller's tenant (another tenant's is not found)."""
        return _view(await self._row(instance_id))

    async def list(
        self,
        *,
        status: str | None,
        definition: str | None,
        business_key: str | None,
        limit: int,
        cursor: str | None,
    ) -> InstanceList:
        """A page of instances, newest first."""
        if not 1 <= limit <= 200:
            raise UnprocessableError(
                "limit must be 1 to 200", errors=[FieldError(path="query.limit", message="1 to 200")]
            )
        after = decode_cursor(cursor) if cursor else None
        async with self.db.transaction() as uow:
            rows = await InstanceRepository(uow.conn).list(
                status=status, definition=definition, business_key=business_key, limit=limit + 1, after=after
            )
        items = [
            InstanceSummary(
                id=str(r.id),
                definition=r.definition,
                version=r.version,
                status=r.status,
                business_key=r.business_key,
                trace_id=r.trace_id,
                created_at=r.created_at,
                updated_at=r.updated_at,
                ended_at=r.ended_at,
            )
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return InstanceList(items=items, next_cursor=next_cursor)

    async def history(self, instance_id: str, /) -> HistoryView:
        """Every step attempt (times, worker, outcome, error) and every step event."""
        row = await self._row(instance_id)
        async with self.db.transaction() as uow:
            attempts = await InstanceRepository(uow.conn).attempts(instance_id)
        return HistoryView(
            instance_id=instance_id,
            attempts=[_attempt(a) for a in attempts],
            steps=[
                StepEventView(
                    step=r.node,
                    kind=r.kind.value,
                    status=r.status.value,
                    at=r.at,
                    attempt=r.attempt,
                    job_id=r.job_id,
                    task_id=r.task_id,
                    user=r.user,
                    error=msgspec.to_builtins(r.error) if r.error is not None else None,
                )
                for r in row.state.history
            ],
        )

    async def graph(self, instance_id: str, /) -> GraphView:
        """The instance's graph with its state, as Mermaid."""
        row = await self._row(instance_id)
        async with self.db.transaction() as uow:
            definition, _ = await self.runtime.machine(
                InstanceRepository(uow.conn), self.caller.tenant, row.definition, row.version
            )
        return GraphView(
            instance_id=instance_id, format="mermaid", mermaid=instance_to_mermaid(definition, row.state)
        )

    async def cancel(self, instance_id: str, /, *, reason: str) -> InstanceView:
        """Cancel: open tasks and timers are withdrawn; late results are dropped."""
        return await self._apply(instance_id, CancelRequested(at=datetime.now(UTC), reason=reason))

    def _check_size(self, data: dict[str, Any]) -> None:
        size = len(msgspec.json.encode(data))
        if size > self.max_input_bytes:
            raise InputTooLargeError(size, self.max_input_bytes)

    async def retry(self, instance_id: str, /, *, data: dict[str, Any]) -> InstanceView:
        """Retry the open incidents (a failed step as a new attempt), after merging ``data``."""
        self._check_size(data)
        try:
            return await self._apply(instance_id, RetryRequested(at=datetime.now(UTC), data=data))
        except EngineNoIncidentError as exc:
            raise NoIncidentError(instance_id) from exc

    async def signal(self, instance_id: str, name: str, /, *, data: dict[str, Any]) -> InstanceView:
        """Deliver a signal to the instance."""
        if not SIGNAL_NAME.fullmatch(name):
            raise UnprocessableError(
                "invalid signal name", errors=[FieldError(path="path.name", message="dotted lower case")]
            )
        self._check_size(data)
        return await self._apply(instance_id, SignalReceived(at=datetime.now(UTC), name=name, data=data))

    async def _apply(self, instance_id: str, event: Event) -> InstanceView:
        try:
            uuid.UUID(instance_id)
        except ValueError as exc:
            raise InstanceNotFoundError(instance_id) from exc
        try:
            async with self.db.transaction() as uow:
                applied = await self.runtime.apply(
                    uow, instance_id, event, max_context_bytes=self.max_context_bytes
                )
        except InstanceNotActiveError as exc:
            raise InstanceEndedError(instance_id, exc.status) from exc
        if applied.instance is None or applied.transition is None:
            raise InstanceNotFoundError(instance_id)
        if applied.transition.ignored == "ended":
            raise InstanceEndedError(instance_id, applied.instance.state.status.value)
        return await self.get(instance_id)


def _attempt(a: AttemptRow) -> AttemptView:
    return AttemptView(
        step=a.step,
        step_type=a.step_type,
        job_id=a.job_id,
        attempt=a.attempt,
        outcome=a.status,
        dispatched_at=a.dispatched_at,
        deadline=a.deadline,
        finished_at=a.finished_at,
        worker=a.worker,
        error=a.error,
    )


_ = InstanceState
