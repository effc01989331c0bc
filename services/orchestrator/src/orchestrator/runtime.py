"""The runtime: drives workflow_core's pure engine inside database transactions.

Every state change is atomic on the tenant's schema: read the instance row, apply the event with
the instance's own definition version, and store the new state (revision + 1) together with the
engine's commands: step attempts and timers as rows, jobs, task commands and lifecycle events as
outbox rows (published after commit by the relay with stable ``Nats-Msg-Id``s). A crash anywhere
before the commit leaves nothing; after it, everything. An instance's events and task messages are
published in the order they were caused (the instance is their ordering key); each job is ordered
only with its own attempts, so a job never waits for another message's acknowledgement.

A change to existing instances is a transaction that locks their rows first, except a worker's
result for an instance whose latest state this process wrote itself: that one is applied to the
state in memory and written with one statement guarded by the revision
(:mod:`orchestrator.instance_cache`). A start (new rows only) is one statement that commits by
itself (see :mod:`orchestrator.starts`). What a transition counts (metrics) is counted once it
committed (``UnitOfWork.after_commit``): a write that conflicts is applied again.

Every transition is a span of the instance's trace (its stored ``traceparent``), whichever
process applies it; the outbox stamps that span's ``traceparent`` on the messages it causes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.trace import Span, SpanKind

from orchestrator.definitions import DefinitionCache
from orchestrator.errors import ContextTooLargeError
from orchestrator.instance_cache import InstanceCache
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.repositories import InstanceRepository, InstanceRow, Writes
from orchestrator.starts import PendingStart, StartBatcher
from wf_platform.db import UnitOfWork
from wf_platform.telemetry import continued_span, span
from workflow_core import InstanceState, WorkflowDefinition, WorkflowMachine
from workflow_core.engine import Transition
from workflow_core.messages import (
    DefinitionRef,
    InstanceEvent,
    JobMessage,
    TaskCancelledMessage,
    TaskCreatedMessage,
    TaskEscalatedMessage,
    encode,
    job_msg_id,
)
from workflow_core.models import (
    CancelInstance,
    CancelTask,
    CancelTimer,
    Command,
    CompleteInstance,
    CreateTask,
    DispatchJob,
    EscalateTask,
    Event,
    FailInstance,
    RaiseIncident,
    StartTimer,
    StepCompleted,
    StepError,
    StepFailed,
    StepKind,
    StepStatus,
)
from workflow_core.subjects import instance_event_subject, job_subject, task_subject

__all__ = ["Applied", "Batch", "Runtime"]

_OUTCOMES = {
    StepStatus.COMPLETED: "completed",
    StepStatus.FAILED: "failed",
    StepStatus.CANCELLED: "cancelled",
}

logger = logging.getLogger("orchestrator.runtime")


def job_ordering_key(job_id: str, /) -> str:
    """The outbox ordering key of a job's attempts: their own, not the instance's (see ``_dispatch``)."""
    return f"job:{job_id}"


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one event did: the transition, or ``None`` when the instance does not exist."""

    transition: Transition | None
    instance: InstanceRow | None


class Runtime:
    """Applies events to stored instances; see the module docstring."""

    def __init__(self, cache: DefinitionCache, metrics: OrchestratorMetrics) -> None:
        self.cache = cache
        self.metrics = metrics
        self.instances = InstanceCache()
        """The states this process wrote last (a result for one of them is applied without a read)."""
        self.starts = StartBatcher(
            self._started, on_conflict=metrics.write_conflicts.labels(source="start").inc
        )

    async def _started(self, uow: UnitOfWork, writes: Writes, start: PendingStart, /) -> None:
        """What a new instance causes in its start transaction: its ``started`` event, then the
        engine's first commands."""
        state = start.state
        await uow.publish(
            instance_event_subject(uow.tenant, "started"),
            encode(
                InstanceEvent(
                    tenant=uow.tenant,
                    instance_id=state.instance_id,
                    definition=DefinitionRef(name=state.definition, version=state.version),
                    status="started",
                    at=state.started_at,
                    business_key=state.business_key,
                )
            ),
            msg_id=f"{state.instance_id}:started",
            ordering_key=state.instance_id,
        )
        uow.after_commit(self.metrics.instances.labels(event="started").inc)
        tenant = uow.tenant
        # Once stored, the new instance is this process's latest known state of it (see Batch.flush).
        uow.after_commit(lambda: self.instances.put(tenant, start.instance.row()))
        await self.carry_out(uow, writes, state, start.commands)

    async def machine(
        self, repo: InstanceRepository, tenant: str, name: str, version: str, /
    ) -> tuple[WorkflowDefinition, WorkflowMachine]:
        """The compiled definition an instance runs (memory, else the tenant's stored copy)."""
        cached = self.cache.get(tenant, name, version)
        if cached is not None:
            return cached
        wire = await repo.stored_definition(name, version)
        if wire is None:
            raise LookupError(f"definition {name} {version} is not stored for tenant {tenant}")
        return self.cache.put(tenant, wire)

    @contextmanager
    def instance_span(self, name: str, traceparent: str | None, /, **attributes: Any) -> Generator[Span]:
        """A span in the instance's trace (a child of its stored trace context)."""
        with continued_span(
            name, {"traceparent": traceparent} if traceparent else None, **attributes
        ) as span:
            yield span

    async def apply(
        self, uow: UnitOfWork, instance_id: str, event: Event, /, *, max_context_bytes: int | None = None
    ) -> Applied:
        """Apply ``event`` to the stored instance, in ``uow``'s transaction.

        With ``max_context_bytes``, a transition that would grow the context beyond it raises
        :class:`~orchestrator.errors.ContextTooLargeError` (413) and nothing is stored; a worker's
        result that would do so fails its step instead (see :meth:`Batch.apply`).
        """
        batch = self.batch(uow)
        await batch.lock([instance_id])
        applied = await batch.apply(instance_id, event, max_context_bytes=max_context_bytes)
        await batch.flush()
        return applied

    def batch(self, uow: UnitOfWork, /) -> Batch:
        """Several events applied in ``uow``'s transaction with one lock query and one flush."""
        return Batch(self, uow)

    async def carry_out(
        self,
        uow: UnitOfWork,
        writes: Writes,
        state: InstanceState,
        commands: list[Command],
        /,
    ) -> None:
        """Turn the engine's commands into rows and outbox messages of this transaction."""
        tenant = uow.tenant
        ref = DefinitionRef(name=state.definition, version=state.version)
        at = state.updated_at
        for command in commands:
            match command:
                case DispatchJob():
                    await self._dispatch(uow, writes, state, command, ref)
                case StartTimer():
                    writes.add_timer(
                        timer_id=command.timer_id,
                        tenant=tenant,
                        instance_id=state.instance_id,
                        kind=command.kind.value,
                        due_at=command.due_at,
                    )
                case CancelTimer():
                    writes.delete_timer(command.timer_id)
                case CreateTask():
                    message = TaskCreatedMessage(
                        task_id=command.task_id,
                        tenant=tenant,
                        instance_id=state.instance_id,
                        definition=ref,
                        step=command.step,
                        title=command.title,
                        created_at=at,
                        description=command.description,
                        form_schema=command.form_schema,
                        ui_hints=command.ui_hints,
                        assignee=command.assignee,
                        candidate_users=command.candidate_users,
                        candidate_groups=command.candidate_groups,
                        priority=command.priority,
                        due_at=command.due_at,
                        follow_up_at=command.follow_up_at,
                        context=command.context,
                    )
                    await uow.publish(
                        task_subject(tenant, "created"),
                        encode(message),
                        msg_id=f"task:{command.task_id}:created",
                        ordering_key=state.instance_id,
                    )
                    uow.after_commit(self.metrics.tasks.labels(event="created").inc)
                case CancelTask():
                    await uow.publish(
                        task_subject(tenant, "cancelled"),
                        encode(
                            TaskCancelledMessage(
                                task_id=command.task_id,
                                tenant=tenant,
                                instance_id=state.instance_id,
                                reason=command.reason,
                            )
                        ),
                        msg_id=f"task:{command.task_id}:cancelled",
                        ordering_key=state.instance_id,
                    )
                case EscalateTask():
                    await uow.publish(
                        task_subject(tenant, "escalated"),
                        encode(
                            TaskEscalatedMessage(
                                task_id=command.task_id,
                                tenant=tenant,
                                instance_id=state.instance_id,
                                add_candidate_groups=command.add_candidate_groups,
                                priority=command.priority,
                            )
                        ),
                        msg_id=f"task:{command.task_id}:escalated",
                        ordering_key=state.instance_id,
                    )
                case RaiseIncident():
                    uow.after_commit(self.metrics.incidents.labels(kind=command.incident.kind).inc)
                    logger.warning(
                        "incident %s at %s: %s",
                        command.incident.kind,
                        command.incident.node,
                        command.incident.message,
                        extra={"tenant": tenant, "instance_id": state.instance_id},
                    )
                case CompleteInstance():
                    await self._lifecycle(uow, state, "completed", ref)
                case FailInstance():
                    await self._lifecycle(uow, state, "failed", ref, reason=command.reason)
                case CancelInstance():
                    await self._lifecycle(uow, state, "cancelled", ref, reason=command.reason)

    async def _dispatch(
        self,
        uow: UnitOfWork,
        writes: Writes,
        state: InstanceState,
        command: DispatchJob,
        ref: DefinitionRef,
    ) -> None:
        tenant = uow.tenant
        at = state.updated_at
        deadline = command.deadline
        writes.add_attempt(
            job_id=command.job_id,
            attempt=command.attempt,
            instance_id=state.instance_id,
            step=command.step,
            step_type=command.step_type,
            at=at,
            deadline=deadline,
        )
        message = JobMessage(
            job_id=command.job_id,
            tenant=tenant,
            instance_id=state.instance_id,
            step=command.step,
            step_type=command.step_type,
            attempt=command.attempt,
            input=command.input,
            deadline=deadline,
            definition=ref,
        )
        with span(
            f"dispatch {command.step_type}",
            kind=SpanKind.PRODUCER,
            **{"wf.job_id": command.job_id, "wf.attempt": command.attempt, "wf.step": command.step},
        ):
            # Ordered per job (its attempts), not per instance: a job needs nothing published
            # before it (its cause committed first), so it does not wait for the acks of the
            # instance's ``started`` event or of the other jobs of a fan-out, and goes out at once.
            await uow.publish(
                job_subject(tenant, command.step_type),
                encode(message),
                msg_id=job_msg_id(command.job_id, command.attempt),
                ordering_key=job_ordering_key(command.job_id),
            )
        uow.after_commit(self.metrics.jobs_dispatched.labels(step_type=command.step_type).inc)

    async def _lifecycle(
        self,
        uow: UnitOfWork,
        state: InstanceState,
        what: Any,
        ref: DefinitionRef,
        *,
        reason: str | None = None,
    ) -> None:
        event = InstanceEvent(
            tenant=uow.tenant,
            instance_id=state.instance_id,
            definition=ref,
            status=what,
            at=state.updated_at,
            business_key=state.business_key,
            reason=reason,
        )
        await uow.publish(
            instance_event_subject(uow.tenant, what),
            encode(event),
            msg_id=f"{state.instance_id}:{what}:{state.seq}",
            ordering_key=state.instance_id,
        )
        uow.after_commit(self.metrics.instances.labels(event=what).inc)


def _context_size(state: InstanceState) -> int:
    # Buffered signals wait to join the context: they count against it too.
    return len(msgspec.json.encode(state.data)) + sum(
        len(msgspec.json.encode(signal.data)) for signal in state.pending_signals
    )


def trace_id_of(span: Span) -> str | None:
    """A span's trace id as 32 hex digits."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class Batch:
    """Events applied to locked instances in one transaction; their writes flushed together.

    Lock first (:meth:`lock`, or :meth:`lock_jobs` for worker results), apply events in order
    (several may concern one instance: each sees the state the previous one left), then
    :meth:`flush`. Nothing is written before the flush, and the flush is part of the transaction.
    """

    def __init__(self, runtime: Runtime, uow: UnitOfWork, /) -> None:
        self.runtime = runtime
        self.uow = uow
        self.repo = InstanceRepository(uow.conn)
        self.writes = Writes()
        self._rows: dict[str, InstanceRow] = {}
        self._jobs: dict[str, str] = {}

    async def lock(self, instance_ids: list[str], /) -> None:
        """Lock these instances for the rest of the transaction."""
        self._rows.update(await self.repo.lock(instance_ids))

    async def lock_jobs(self, job_ids: list[str], /) -> None:
        """Lock the instances these jobs belong to (unknown jobs are left out)."""
        jobs, rows = await self.repo.lock_jobs(job_ids)
        self._jobs.update(jobs)
        self._rows.update(rows)

    def adopt(self, rows_by_job: dict[str, InstanceRow], /) -> None:
        """Apply to these rows, by job id, without reading or locking them (states this process
        wrote last, see :mod:`orchestrator.instance_cache`): the write then checks each is still at
        its revision, and fails as a whole otherwise (:class:`~orchestrator.repositories.WriteConflict`)."""
        for job_id, row in rows_by_job.items():
            self._jobs[job_id] = row.id
            self._rows[row.id] = row

    def instance_of_job(self, job_id: str, /) -> str | None:
        """The instance of a job locked with :meth:`lock_jobs` (or adopted)."""
        return self._jobs.get(job_id)

    def written_rows(self) -> list[InstanceRow]:
        """The instances' rows as the flush writes them (new state and revision)."""
        return [self._rows[instance_id] for instance_id in self.writes.instances]

    async def apply(
        self, instance_id: str, event: Event, /, *, max_context_bytes: int | None = None
    ) -> Applied:
        """Apply ``event`` to a locked instance (``Applied(None, None)`` when it does not exist)."""
        row = self._rows.get(instance_id)
        if row is None:
            return Applied(None, None)
        runtime, uow = self.runtime, self.uow
        _, machine = await runtime.machine(self.repo, uow.tenant, row.definition, row.version)
        kind = type(event).__name__
        with runtime.instance_span(
            f"workflow.{kind}", row.traceparent, **{"wf.tenant": uow.tenant, "wf.instance_id": instance_id}
        ) as span:
            transition = machine.apply(row.state, event)
            if transition.ignored is not None:
                span.set_attribute("wf.ignored", transition.ignored)
                uow.after_commit(runtime.metrics.dropped.labels(reason=transition.ignored, event=kind).inc)
                return Applied(transition, row)
            state = transition.state
            if max_context_bytes is not None and (size := _context_size(state)) > max_context_bytes:
                if not isinstance(event, StepCompleted):
                    raise ContextTooLargeError(size, max_context_bytes)
                # A worker's output that would grow the context beyond the limit fails its step
                # (not retryable: the same output would come back): an incident, or the step's
                # on_error route, instead of an instance nobody can store.
                event = StepFailed(
                    at=event.at,
                    job_id=event.job_id,
                    attempt=event.attempt,
                    worker=event.worker,
                    error=StepError(
                        type="ContextTooLarge",
                        message=f"the output would grow the context to {size} bytes "
                        f"(limit {max_context_bytes})",
                        retryable=False,
                    ),
                )
                transition = machine.apply(row.state, event)
                state = transition.state
            self._rows[instance_id] = dataclasses.replace(row, state=state, revision=row.revision + 1)
            self.writes.update(state, locked_revision=row.revision, revision=row.revision + 1)
            self._record_attempts(len(row.state.history), state)
            await runtime.carry_out(uow, self.writes, state, transition.commands)
            span.set_attribute("wf.status", state.status.value)
        return Applied(transition, row)

    def _record_attempts(self, before: int, state: InstanceState) -> None:
        """Finish the attempt rows the transition ended (results, deadlines, cancellation)."""
        for record in state.history[before:]:
            if record.kind is not StepKind.MACHINE or record.job_id is None:
                continue
            outcome = _OUTCOMES.get(record.status)
            if outcome is None:
                continue
            if record.error is not None and record.error.type == "DeadlineExceeded":
                outcome = "timed_out"
            self.writes.finish_attempt(
                job_id=record.job_id,
                attempt=record.attempt,
                status=outcome,
                at=record.at,
                worker=record.user,
                error=msgspec.to_builtins(record.error) if record.error is not None else None,
            )

    async def flush(self) -> None:
        """Write everything the applied events changed and their outbox rows (still inside the
        transaction): one statement. Once the unit commits, the rows written become the process's
        latest known states (:attr:`Runtime.instances`), whichever path wrote them (a worker's
        result, a task completion, a timer, an API call): the next result for one of them is then
        applied without a read."""
        outbox = self.uow.take_outbox()
        self.uow.outbox_written(outbox, *await self.repo.write(self.writes, outbox))
        written = self.written_rows()
        if written:
            cache, tenant = self.runtime.instances, self.uow.tenant
            self.uow.after_commit(lambda: [cache.put(tenant, row) for row in written])
