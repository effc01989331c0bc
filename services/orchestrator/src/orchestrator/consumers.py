"""NATS consumers: worker results and task completions, and the durable timer loop.

Each consumer is a durable pull consumer fetching batches. A message is acked only after the
transaction that applied it committed; when the transaction fails (database down) the message is
nak'ed with a delay and comes back. What can never apply is acked, dropped and counted
(``wf_messages_dropped{reason}``): an undecodable body (``term``), a stale attempt, an unknown job
or task, an ended instance, a subject whose tenant does not match the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg

from orchestrator.metrics import OrchestratorMetrics
from orchestrator.repositories import InstanceRepository, TimerRepository
from orchestrator.runtime import Runtime
from wf_platform.consumers import settle
from wf_platform.db import TenantDatabase
from wf_platform.telemetry import consumer_span
from wf_platform.tenancy import TenantId, is_valid_tenant_id
from workflow_core import TaskDataInvalidError
from workflow_core.messages import JobResult, TaskCompletedMessage
from workflow_core.models import Event, StepCompleted, StepError, StepFailed, TaskCompleted, TimerFired
from workflow_core.subjects import RESULTS_STREAM, TASKS_STREAM

__all__ = ["ResultHandler", "TaskCompletionHandler", "TimerLoop"]

logger = logging.getLogger("orchestrator.consumers")

TenantDb = Callable[[TenantId], TenantDatabase]
KnownTenant = Callable[[str], Awaitable[bool]]


class ResultHandler:
    """``wf.results.<tenant>``: a worker's report on one attempt, applied once per (job, attempt)."""

    def __init__(
        self, runtime: Runtime, tenant_db: TenantDb, known_tenant: KnownTenant, metrics: OrchestratorMetrics
    ) -> None:
        self.runtime = runtime
        self.tenant_db = tenant_db
        self.known_tenant = known_tenant
        self.metrics = metrics

    async def __call__(self, message: Msg) -> None:
        tenant = _tenant_of(message.subject, position=2)
        try:
            result = msgspec.json.decode(message.data, type=JobResult)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.metrics.dropped.labels(reason="undecodable", event="result").inc()
            await message.term()
            return
        if tenant is None or not await self.known_tenant(tenant):
            self.metrics.dropped.labels(reason="unknown_tenant", event="result").inc()
            await message.ack()
            return
        headers = dict(message.headers or {})
        now = datetime.now(UTC)
        event: Event
        if result.status == "completed":
            event = StepCompleted(
                at=now,
                job_id=result.job_id,
                attempt=result.attempt,
                output=result.output,
                worker=headers.get("Wf-Worker"),
            )
        else:
            error = result.error or StepError(
                type="UnknownError", message="the worker reported no error", retryable=True
            )
            event = StepFailed(
                at=now,
                job_id=result.job_id,
                attempt=result.attempt,
                error=error,
                worker=headers.get("Wf-Worker"),
            )

        async def apply() -> None:
            started = time.perf_counter()
            with consumer_span("result", headers, **{"wf.tenant": tenant, "wf.job_id": result.job_id}):
                async with self.tenant_db(TenantId(tenant)).transaction() as uow:
                    instance_id = await InstanceRepository(uow.conn).instance_of_job(result.job_id)
                    if instance_id is None:
                        self.metrics.dropped.labels(reason="unknown", event="result").inc()
                        return
                    applied = await self.runtime.apply(uow, instance_id, event)
            if applied.transition is not None and applied.transition.ignored is None:
                self.metrics.results.labels(status=result.status).inc()
            self.metrics.transition_seconds.labels(source="result").observe(time.perf_counter() - started)

        await settle(message, apply)


class TaskCompletionHandler:
    """``wf.tasks.<tenant>.completed``: a person completed a task in the inbox."""

    def __init__(
        self, runtime: Runtime, tenant_db: TenantDb, known_tenant: KnownTenant, metrics: OrchestratorMetrics
    ) -> None:
        self.runtime = runtime
        self.tenant_db = tenant_db
        self.known_tenant = known_tenant
        self.metrics = metrics

    async def __call__(self, message: Msg) -> None:
        tenant = _tenant_of(message.subject, position=2)
        try:
            completion = msgspec.json.decode(message.data, type=TaskCompletedMessage)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.metrics.dropped.labels(reason="undecodable", event="task_completed").inc()
            await message.term()
            return
        if tenant is None or completion.tenant != tenant or not await self.known_tenant(tenant):
            self.metrics.dropped.labels(reason="tenant_mismatch", event="task_completed").inc()
            await message.ack()
            return
        event = TaskCompleted(
            at=datetime.now(UTC), task_id=completion.task_id, data=completion.data, user=completion.user
        )

        async def apply() -> None:
            started = time.perf_counter()
            with consumer_span("task completed", dict(message.headers or {}), **{"wf.tenant": tenant}):
                try:
                    async with self.tenant_db(TenantId(tenant)).transaction() as uow:
                        applied = await self.runtime.apply(uow, completion.instance_id, event)
                except TaskDataInvalidError as exc:
                    # The inbox validates before it publishes; a form that changed meanwhile lands here.
                    logger.warning("task %s completion refused: %s", completion.task_id, exc)
                    self.metrics.dropped.labels(reason="invalid_data", event="task_completed").inc()
                    return
            if applied.instance is None:
                self.metrics.dropped.labels(reason="unknown", event="task_completed").inc()
            elif applied.transition is not None and applied.transition.ignored is None:
                self.metrics.tasks.labels(event="completed").inc()
            self.metrics.transition_seconds.labels(source="task").observe(time.perf_counter() - started)

        await settle(message, apply)


class TimerLoop:
    """Fires due durable timers: each is claimed (SKIP LOCKED) and applied in one transaction."""

    def __init__(
        self,
        timers: TimerRepository,
        runtime: Runtime,
        tenant_db: TenantDb,
        metrics: OrchestratorMetrics,
        *,
        poll_seconds: float,
        batch: int = 200,
    ) -> None:
        self.timers = timers
        self.runtime = runtime
        self.tenant_db = tenant_db
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run :meth:`run` in the background."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="timers")

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Poll for due timers until cancelled."""
        while True:
            try:
                fired = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("timer loop failed; retrying")
                fired = 0
            if fired < self.batch:
                await asyncio.sleep(self.poll_seconds)

    async def run_once(self) -> int:
        """Fire what is due now; the number fired."""
        now = datetime.now(UTC)
        fired = 0
        for timer in await self.timers.due(now, limit=self.batch):
            if not is_valid_tenant_id(timer.tenant_id):
                continue
            async with self.tenant_db(TenantId(timer.tenant_id)).transaction() as uow:
                if not await InstanceRepository(uow.conn).claim_timer(timer.timer_id):
                    continue
                await self.runtime.apply(uow, timer.instance_id, TimerFired(at=now, timer_id=timer.timer_id))
            self.metrics.timers_fired.labels(kind=timer.kind).inc()
            fired += 1
        return fired


def _tenant_of(subject: str, *, position: int) -> str | None:
    parts = subject.split(".")
    if len(parts) <= position:
        return None
    tenant = parts[position]
    return tenant if is_valid_tenant_id(tenant) else None


RESULTS_DURABLE = "orchestrator-results"
TASKS_DURABLE = "orchestrator-task-completions"
RESULTS = (RESULTS_STREAM, RESULTS_DURABLE, "wf.results.*")
TASK_COMPLETIONS = (TASKS_STREAM, TASKS_DURABLE, "wf.tasks.*.completed")
