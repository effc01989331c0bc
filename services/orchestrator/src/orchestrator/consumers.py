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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import msgspec
from nats.aio.msg import Msg

from orchestrator.metrics import OrchestratorMetrics
from orchestrator.repositories import InstanceRepository, InstanceRow, TimerRepository, WriteConflict
from orchestrator.runtime import Applied, Runtime
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


@dataclass(frozen=True, slots=True)
class _Result:
    message: Msg
    tenant: str
    job_id: str
    status: str
    event: Event
    headers: dict[str, str]


class ResultHandler:
    """``wf.results.<tenant>``: a worker's report on one attempt, applied once per (job, attempt).

    A fetched batch is applied per tenant in chunks of ``chunk`` results; its messages are acked
    after the chunk's write committed. A chunk whose instances' latest states this process wrote
    itself is applied to them and written with one statement that checks their revisions
    (:mod:`orchestrator.instance_cache`); otherwise, or when that statement finds a row moved on, it
    is one transaction (one lock query, one write statement, one commit). When a chunk fails (a bad
    message, the database), its results are applied one at a time, so one message that cannot
    apply only holds back itself.
    """

    def __init__(
        self,
        runtime: Runtime,
        tenant_db: TenantDb,
        known_tenant: KnownTenant,
        metrics: OrchestratorMetrics,
        *,
        chunk: int = 64,
        concurrency: int = 4,
        max_context_bytes: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.tenant_db = tenant_db
        self.known_tenant = known_tenant
        self.metrics = metrics
        self.chunk = chunk
        self.concurrency = concurrency
        self.max_context_bytes = max_context_bytes

    async def __call__(self, message: Msg) -> None:
        """Handle one message (a batch of one)."""
        await self.handle_batch([message])

    async def handle_batch(self, messages: list[Msg], /) -> None:
        """Decode, drop what can never apply, and apply the rest per tenant chunk."""
        by_tenant: dict[str, list[_Result]] = {}
        for message in messages:
            result = await self._decode(message)
            if result is not None:
                by_tenant.setdefault(result.tenant, []).append(result)
        chunks = [
            results[i : i + self.chunk]
            for results in by_tenant.values()
            for i in range(0, len(results), self.chunk)
        ]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(chunk: list[_Result]) -> None:
            async with semaphore:
                await self._apply_chunk(chunk)

        await asyncio.gather(*(run(chunk) for chunk in chunks))

    async def _decode(self, message: Msg) -> _Result | None:
        tenant = _tenant_of(message.subject, position=2)
        try:
            result = msgspec.json.decode(message.data, type=JobResult)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.metrics.dropped.labels(reason="undecodable", event="result").inc()
            await message.term()
            return None
        if tenant is None or not await self.known_tenant(tenant):
            self.metrics.dropped.labels(reason="unknown_tenant", event="result").inc()
            await message.ack()
            return None
        if not _is_uuid(result.job_id):
            # Job ids are UUIDs; anything else names no job (and must not reach a uuid column).
            self.metrics.dropped.labels(reason="unknown", event="result").inc()
            await message.ack()
            return None
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
        return _Result(message, tenant, result.job_id, result.status, event, headers)

    async def _apply_chunk(self, chunk: list[_Result]) -> None:
        if len(chunk) > 1:
            try:
                await self._apply(chunk)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(
                    "a batch of %d results failed; applying them one by one", len(chunk), exc_info=True
                )
            else:
                await asyncio.gather(*(_ack(r.message) for r in chunk))
                return
        for result in chunk:
            await settle(result.message, partial(self._apply, [result]))

    async def _apply(self, chunk: list[_Result]) -> None:
        """Apply the chunk in one statement to the states this process wrote last when it has them
        all (see :mod:`orchestrator.instance_cache`), else (or when that write finds a row moved
        on, or a result the cached state would ignore) in a transaction on the locked rows."""
        started = time.perf_counter()
        tenant = chunk[0].tenant
        cache = self.runtime.instances
        rows = await cache.claim_waiting(tenant, [r.job_id for r in chunk])
        if rows is not None:
            try:
                outcomes = await self._apply_to(chunk, rows)
            except WriteConflict:
                self.metrics.write_conflicts.labels(source="result").inc()
                for row in rows.values():
                    cache.drop(tenant, row.id)
            except _NotTrusted:
                pass
            else:
                self._count(chunk, outcomes, started, path="cached")
                return
            finally:
                cache.release(tenant, {row.id for row in rows.values()})
        self._count(chunk, await self._apply_to(chunk, None), started, path="locked")

    async def _apply_to(
        self, chunk: list[_Result], rows: dict[str, InstanceRow] | None, /
    ) -> list[tuple[_Result, Applied]]:
        """Apply the chunk to ``rows`` (by job id, not read: one statement) or, with ``None``, to
        the rows it locks (one transaction)."""
        tenant = chunk[0].tenant
        database = self.tenant_db(TenantId(tenant))
        outcomes: list[tuple[_Result, Applied]] = []
        async with database.single_statement() if rows is not None else database.transaction() as uow:
            batch = self.runtime.batch(uow)
            if rows is None:
                await batch.lock_jobs([r.job_id for r in chunk])
            else:
                batch.adopt(rows)
            for result in chunk:
                with consumer_span(
                    "result", result.headers, **{"wf.tenant": tenant, "wf.job_id": result.job_id}
                ):
                    instance_id = batch.instance_of_job(result.job_id)
                    if instance_id is None:
                        outcomes.append((result, Applied(None, None)))
                        continue
                    applied = await batch.apply(
                        instance_id, result.event, max_context_bytes=self.max_context_bytes
                    )
                    if rows is not None and (applied.transition is None or applied.transition.ignored):
                        raise _NotTrusted  # the stored row decides (nothing was written)
                    outcomes.append((result, applied))
            await batch.flush()  # the rows written go to the instance cache once committed
        return outcomes

    def _count(
        self, chunk: list[_Result], outcomes: list[tuple[_Result, Applied]], started: float, *, path: str
    ) -> None:
        # Counted after the commit: a rolled-back chunk is applied again and must not count twice.
        self.metrics.result_chunks.labels(path=path).inc()
        for result, applied in outcomes:
            if applied.instance is None:
                self.metrics.dropped.labels(reason="unknown", event="result").inc()
            elif applied.transition is not None and applied.transition.ignored is None:
                self.metrics.results.labels(status=result.status).inc()
        elapsed = (time.perf_counter() - started) / len(chunk)
        for _ in chunk:
            self.metrics.transition_seconds.labels(source="result").observe(elapsed)


class _NotTrusted(Exception):  # noqa: N818 - a condition to handle, not a failure
    """A cached state would ignore a result: it may be behind the stored row (another process
    applied something since), so the locked path decides."""


async def _ack(message: Msg) -> None:
    with contextlib.suppress(Exception):
        await message.ack()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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
