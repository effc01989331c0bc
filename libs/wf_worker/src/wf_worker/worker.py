"""The worker: runs ``BaseMachineStep`` classes for the jobs the orchestrator publishes on ``WF_JOBS``.

```python
worker = Worker(steps=[ChargeCard, ReserveStock], nats_url="nats://127.0.0.1:4222", tenant=None)
await worker.run()          # until SIGTERM / SIGINT or worker.stop(); then a graceful shutdown
```

How a job is handled (DESIGN.md §5, docs/nats.md):

1. One durable pull consumer per step type on ``WF_JOBS``: filter ``wf.jobs.*.<step_type>`` (every
   tenant) or ``wf.jobs.<tenant>.<step_type>``, durable ``wf-worker-<tenant|all>-<step_type with _>``.
   Every process of one worker group binds the same durable and they split the work. The worker
   never creates or alters streams (the orchestrator provisions them); it creates or updates its
   own consumers. Jobs are pulled continuously (:class:`~wf_worker.pull.PullStream`, as the
   orchestrator's consumers pull): a job starts as soon as it arrives and a slot is free; a consumer
   deleted under the worker is noticed (missed heartbeats, a refused request) and bound again; on
   shutdown, jobs delivered and not started go back to the stream at once (nak).
2. The job's ``input`` becomes the :class:`~workflow_core.WorkflowContext`'s data; its metadata holds
   ``instance_id, definition, version, step, step_type, job_id, attempt, tenant, deadline,
   delivery, worker``. ``context.job_id`` is the idempotency key of the step's side effects.
3. ``execute(context)`` runs in one OpenTelemetry CONSUMER span continued from the job's
   ``traceparent``. While it runs, in-progress acks keep JetStream from redelivering it (every
   ``ack_wait * heartbeat_fraction``).
4. The result (``output`` = what the step ``set``, or the error) is published on
   ``wf.results.<tenant>`` with a JetStream publish (``Nats-Msg-Id: result:<job_id>:<attempt>``,
   ``traceparent``, ``Wf-Worker``), and only once JetStream acknowledged it is the job acked. A
   result that cannot be published leaves the job unacked: it comes back and runs again.

Errors are reported by the rule the in-process engine uses (:func:`workflow_core.local.error_of`):
:class:`~workflow_core.StepFailedError` says whether it is retryable; a type listed in the step's
``non_retryable_errors`` is final; anything else unexpected is retryable.

Delivery is at least once: a worker that dies mid-job, or an ack lost on the way, means the job runs
again with the same ``job_id`` and ``attempt`` (``context.metadata["delivery"]`` counts deliveries).
Making side effects idempotent on ``context.job_id`` is the step's concern; the orchestrator applies
one result per ``(job_id, attempt)``.

Blocking code: a step whose ``execute`` is a plain ``def`` runs in a thread
(``asyncio.to_thread``); an ``async def execute`` on a class with ``run_in_thread = True`` (or
decorated with :func:`blocking`) runs in a thread with its own event loop. Everything else runs on
the worker's loop, so it must not block. One step object serves every job of its type, possibly
several at once: keep per-job state in locals or the context, not on ``self``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wf_worker.health import HealthServer
from wf_worker.metrics import metrics
from wf_worker.pull import ConsumerGoneError, PullStream
from wf_worker.settings import WorkerSettings
from workflow_core.context import WorkflowContext
from workflow_core.local import error_of
from workflow_core.messages import JobMessage, JobResult
from workflow_core.steps import BaseMachineStep, as_step
from workflow_core.subjects import JOBS_STREAM, SubjectError, job_subject, result_subject, validate_tenant

__all__ = ["ConsumerBindError", "Worker", "WorkerError", "blocking", "durable_name"]

logger = logging.getLogger("wf_worker")

_propagator = TraceContextTextMapPropagator()
_T = TypeVar("_T", bound=type)


class WorkerError(Exception):
    """Root of the worker's errors.

    Tree: ``WorkerError`` > ``ConsumerBindError`` (a consumer could not be created or bound).
    Invalid steps raise ``ValueError`` at construction.
    """


class ConsumerBindError(WorkerError):
    """The durable consumer of a step type could not be created or bound."""

    def __init__(self, step_type: str, durable: str, reason: str) -> None:
        self.step_type = step_type
        self.durable = durable
        self.reason = reason
        super().__init__(
            f"cannot bind consumer {durable} for step type {step_type}: {reason} (is WF_JOBS provisioned "
            "by the orchestrator, and is no other worker group consuming this step type with an "
            "overlapping tenant filter?)"
        )


def blocking(cls: _T) -> _T:
    """Class decorator: run this step's ``execute`` in a thread (``run_in_thread = True``)."""
    cls.run_in_thread = True
    return cls


def durable_name(step_type: str, tenant: str | None = None) -> str:
    """The durable consumer name of a worker group: ``wf-worker-<tenant|all>-<step_type, dots as _>``."""
    return f"wf-worker-{tenant or 'all'}-{step_type.replace('.', '_')}"


class _Slots:
    """The concurrency cap: a job starts only on a free slot, so at most ``size`` jobs run at once.

    Besides those, each step type's pull may hold up to its share of the slots in jobs delivered and
    not yet started (they start as soon as a slot frees; on shutdown they are handed back at once).
    A step type waiting for jobs holds at least one slot: give a worker more concurrency than it has
    step types, or split the step types over processes.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._changed = asyncio.Condition()
        self._closed = False

    async def reserve(self, most: int) -> int:
        """Wait for at least one free slot and take up to ``most``; 0 once closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0 or self._closed)
            if self._closed:
                return 0
            taken = min(self.free, most)
            self.free -= taken
            return taken

    async def release(self, count: int) -> None:
        if count <= 0:
            return
        async with self._changed:
            self.free += count
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class Worker:
    """Runs machine steps for the jobs of their step types.

    Args:
        steps: ``BaseMachineStep`` classes (or instances): the same classes a definition uses.
            Any object with ``name`` and ``async execute(context)`` serves the step type ``name``.
        nats_url: Comma-separated NATS URLs (ignored when ``settings`` is given).
        tenant: One tenant, or ``None`` for every tenant.
        concurrency: Jobs running at once in this process, over every step type.
        ack_wait: Seconds before JetStream redelivers an unacknowledged job.
        max_deliver: Deliveries of one job message at most.
        settings: Everything above plus authentication, TLS and the health endpoint; keyword
            arguments given explicitly override it.
        name: The worker id reported in ``Wf-Worker`` (default ``<host>-<pid>-<random>``).
        heartbeat_fraction: In-progress acks are sent every ``ack_wait * heartbeat_fraction``.
        fetch_timeout: Longest wait of one pull; also bounds how long a shutdown waits for fetches.
        tracer_provider: Where spans go (the global provider by default).
        handle_signals: ``run()`` shuts down gracefully on SIGTERM and SIGINT (main thread only).
        connect_options: Extra ``nats.connect`` keyword arguments (callbacks, timeouts).

    Raises:
        ValueError: a step without a valid step type, two steps with one step type, a bad tenant.
    """

    def __init__(
        self,
        steps: Iterable[object],
        *,
        nats_url: str | None = None,
        tenant: str | None = None,
        concurrency: int | None = None,
        ack_wait: float | None = None,
        max_deliver: int | None = None,
        settings: WorkerSettings | None = None,
        name: str | None = None,
        heartbeat_fraction: float = 0.3,
        fetch_timeout: float = 1.0,
        tracer_provider: TracerProvider | None = None,
        handle_signals: bool = True,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        base = settings or WorkerSettings()
        overrides: dict[str, Any] = {
            "nats_url": nats_url,
            "concurrency": concurrency,
            "ack_wait_seconds": ack_wait,
            "max_deliver": max_deliver,
        }
        if tenant is not None:
            overrides["tenant"] = tenant
        self.settings = WorkerSettings(
            **{**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
        )
        if self.settings.tenant is not None:
            validate_tenant(self.settings.tenant)
        if self.settings.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 < heartbeat_fraction < 1:
            raise ValueError("heartbeat_fraction must be between 0 and 1")
        self.steps: dict[str, Any] = {}
        for item in steps:
            step = as_step(item)
            step_type = (
                step.routing_key if isinstance(step, BaseMachineStep) else str(getattr(step, "name", ""))
            )
            try:
                job_subject("probe", step_type)
            except SubjectError:
                raise ValueError(
                    f"{type(step).__name__} has no valid step type ({step_type!r}): dotted lower case"
                ) from None
            if not callable(getattr(step, "execute", None)):
                raise ValueError(f"{type(step).__name__} has no execute(context)")
            if step_type in self.steps:
                raise ValueError(
                    f"step type {step_type} is served by both {type(self.steps[step_type]).__name__} "
                    f"and {type(step).__name__}"
                )
            self.steps[step_type] = step
        if not self.steps:
            raise ValueError("a worker needs at least one machine step")
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._heartbeat_fraction = heartbeat_fraction
        self._fetch_timeout = fetch_timeout
        self._tracer = trace.get_tracer("wf_worker", tracer_provider=tracer_provider)
        self._handle_signals = handle_signals
        self._connect_options = dict(connect_options or {})
        self._metrics = metrics()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = _Slots(self.settings.concurrency)
        self._ack_waits: dict[str, float] = {}
        self._streams: dict[str, PullStream] = {}
        """Each step type's pull on its durable consumer (bound again if the consumer is deleted)."""
        # Each step type's pull holds at most its share of the slots while it waits for jobs, so an
        # idle step type never starves a busy one (a busy one refills as soon as a slot frees).
        self._batch = max(1, self.settings.concurrency // len(self.steps))
        self._health: HealthServer | None = None

    # ------------------------------------------------------------------ public

    @property
    def is_ready(self) -> bool:
        """Connected, consumers bound, and not shutting down."""
        return (
            self._ready.is_set()
            and not self._stopping.is_set()
            and self._nc is not None
            and self._nc.is_connected
        )

    @property
    def health_port(self) -> int | None:
        """The port the health endpoint listens on while running (the bound one when 0 was asked)."""
        return self._health.port if self._health is not None else None

    @property
    def in_flight(self) -> int:
        """Jobs running now."""
        return len(self._in_flight)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once ``run()`` has connected and bound every consumer."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    def stop(self) -> None:
        """Begin a graceful shutdown: stop fetching, finish the jobs in flight, then close.

        Safe to call from a signal handler and more than once; ``run()`` returns when it is done.
        """
        self._stopping.set()

    async def run(self) -> None:
        """Connect, bind a consumer per step type, and handle jobs until :meth:`stop` (or a signal).

        Raises:
            ConsumerBindError: a consumer could not be bound.
        """
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    handled.append(sig)
        health: HealthServer | None = None
        self._streams.clear()
        try:
            self._nc = await nats.connect(  # pyright: ignore[reportUnknownMemberType]
                **{
                    **self.settings.connect_options(),
                    "name": f"wf-worker {self.name}",
                    **self._connect_options,
                }
            )
            self._js = self._nc.jetstream()  # pyright: ignore[reportUnknownMemberType]
            for step_type in self.steps:
                stream = await self._bind_when_provisioned(self._js, step_type)
                if stream is None:
                    return  # stopped while waiting for the stream
                self._streams[step_type] = stream
            if self.settings.health_port is not None:
                health = HealthServer(
                    self.settings.health_host, self.settings.health_port, ready=lambda: self.is_ready
                )
                await health.start()
                self._health = health
            self._ready.set()
            logger.info(
                "worker %s serving %s for %s (concurrency %d)",
                self.name,
                ", ".join(self.steps),
                self.settings.tenant or "every tenant",
                self.settings.concurrency,
            )
            fetchers = [
                loop.create_task(self._fetch_loop(step_type), name=f"wf-worker fetch {step_type}")
                for step_type in self._streams
            ]
            await self._stopping.wait()
            logger.info("worker %s stopping: %d job(s) in flight", self.name, len(self._in_flight))
            await self._slots.close()
            # Pulls end within fetch_timeout; what they handed out runs to its end (below), and what
            # arrived but never started goes back to the stream at once.
            await asyncio.gather(*fetchers, return_exceptions=True)
            await self._stop_pulling()
            await self._drain_in_flight()
        finally:
            self._stopping.set()
            for sig in handled:
                loop.remove_signal_handler(sig)
            if health is not None:
                await health.close()
                self._health = None
            await self._stop_pulling()  # again on the way out of a failure (a no-op otherwise)
            if self._nc is not None and not self._nc.is_closed:
                # drain flushes the acks still buffered, then closes
                with contextlib.suppress(Exception):
                    await self._nc.drain()
            logger.info("worker %s stopped", self.name)

    # ------------------------------------------------------------------ machinery

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("worker %s received %s: shutting down gracefully", self.name, sig.name)
        self.stop()

    async def _bind_when_provisioned(self, js: JetStreamContext, step_type: str) -> PullStream | None:
        # A worker may start before the orchestrator has provisioned WF_JOBS (containers start in
        # any order): wait for the stream rather than crash-loop.
        while True:
            try:
                return await self._bind(js, step_type)
            except ConsumerBindError as exc:
                if not isinstance(exc.__cause__, nats.js.errors.NotFoundError):
                    raise
                logger.warning("stream %s not found yet; retrying in 2 s", JOBS_STREAM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return None

    async def _bind(self, js: JetStreamContext, step_type: str) -> PullStream:
        tenant = self.settings.tenant
        subject = job_subject(tenant, step_type) if tenant else f"wf.jobs.*.{step_type}"
        durable = durable_name(step_type, tenant)
        config = ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait_seconds,
            max_deliver=self.settings.max_deliver,
            description=f"wf-worker group for {step_type} ({tenant or 'all tenants'})",
        )
        try:
            # Creates the consumer, or updates the editable settings (ack wait, max deliver) of ours.
            info = await js.add_consumer(JOBS_STREAM, config)  # pyright: ignore[reportUnknownMemberType]
            assert self._nc is not None, "connected before binding"
            stream = await PullStream(
                self._nc, stream=JOBS_STREAM, durable=durable, batch=self._batch
            ).start()
        except nats.errors.Error as exc:
            raise ConsumerBindError(step_type, durable, str(exc) or type(exc).__name__) from exc
        self._ack_waits[step_type] = float(info.config.ack_wait or self.settings.ack_wait_seconds)
        return stream

    async def _fetch_loop(self, step_type: str) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            stream = self._streams[step_type]
            reserved = await self._slots.reserve(self._batch)
            if reserved == 0:
                return
            messages: list[Msg] = []
            try:
                messages = await stream.next_batch(reserved, timeout=self._fetch_timeout)
            except Exception as exc:
                # The consumer deleted under us (bind it again), or a failure while reconnecting.
                logger.warning("pulling %s failed: %s", step_type, exc)
                await self._slots.release(reserved)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stopping.wait()
                if isinstance(exc, ConsumerGoneError) and not self._stopping.is_set():
                    await _hand_back(await stream.stop())
                    assert self._js is not None
                    try:
                        rebound = await self._bind_when_provisioned(self._js, step_type)
                    except ConsumerBindError as bind_error:
                        logger.warning("binding %s again failed: %s", step_type, bind_error)
                        continue  # the stopped stream raises again: retried in a second
                    if rebound is None:
                        return
                    self._streams[step_type] = rebound
                continue
            await self._slots.release(reserved - len(messages))
            for message in messages:
                task = loop.create_task(self._handle(step_type, message))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _stop_pulling(self) -> None:
        """Stop every step type's pull and hand back what it received and never started."""
        for stream in self._streams.values():
            await _hand_back(await stream.stop())

    async def _drain_in_flight(self) -> None:
        if not self._in_flight:
            return
        pending = set(self._in_flight)
        done, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_seconds)
        del done
        if pending:
            # Past the grace period: abandon them unacked; JetStream redelivers them elsewhere.
            logger.warning(
                "shutdown timeout: abandoning %d running job(s), they will be redelivered", len(pending)
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, step_type: str, message: Msg) -> None:
        self._metrics.in_flight(1)
        try:
            await self._process(step_type, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not kill the worker; the job stays unacked and comes back.
            logger.exception("unexpected error handling a %s job", step_type)
        finally:
            self._metrics.in_flight(-1)
            await self._slots.release(1)

    async def _process(self, step_type: str, message: Msg) -> None:
        try:
            job = msgspec.json.decode(message.data, type=JobMessage)
            validate_tenant(job.tenant)
        except (msgspec.DecodeError, msgspec.ValidationError, SubjectError) as exc:
            logger.error("dropping an undecodable job on %s: %s", message.subject, exc)
            self._metrics.job(step_type, "undecodable")
            await message.term()
            return
        delivery = message.metadata.num_delivered or 1
        if delivery > 1:
            self._metrics.redelivered(step_type)
        if job.deadline is not None and job.deadline < datetime.now(UTC):
            # The orchestrator has abandoned this attempt (and dispatched a new one): its result
            # would be dropped as stale, so the work is not done twice.
            logger.info("job %s attempt %d is past its deadline; skipped", job.job_id, job.attempt)
            self._metrics.job(step_type, "expired")
            await message.ack()
            return
        step = self.steps[step_type]
        context = WorkflowContext(
            job.input,
            metadata={
                "instance_id": job.instance_id,
                "definition": job.definition.name,
                "version": job.definition.version,
                "step": job.step,
                "step_type": job.step_type,
                "job_id": job.job_id,
                "attempt": job.attempt,
                "tenant": job.tenant,
                "deadline": job.deadline.isoformat() if job.deadline else None,
                "delivery": delivery,
                "worker": self.name,
            },
            tenant_id=job.tenant,
        )
        parent = _propagator.extract(dict(message.headers or {}))
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(step_type, message))
        try:
            with self._tracer.start_as_current_span(
                f"worker {step_type}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": message.subject,
                    "wf.tenant": job.tenant,
                    "wf.instance_id": job.instance_id,
                    "wf.definition": job.definition.name,
                    "wf.step": job.step,
                    "wf.step_type": step_type,
                    "wf.job_id": job.job_id,
                    "wf.attempt": job.attempt,
                    "wf.delivery": delivery,
                    "wf.worker": self.name,
                },
            ) as span:
                started = time.perf_counter()
                try:
                    await self._execute(step, context)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = error_of(step, exc)
                    result = JobResult(job_id=job.job_id, attempt=job.attempt, status="failed", error=error)
                    outcome = "failed_retryable" if error.retryable else "failed_final"
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
                    span.set_attribute("wf.retryable", error.retryable)
                    logger.info(
                        "job %s attempt %d of %s failed (%s, retryable=%s): %s",
                        job.job_id,
                        job.attempt,
                        step_type,
                        error.type,
                        error.retryable,
                        error.message,
                    )
                else:
                    result = JobResult(
                        job_id=job.job_id, attempt=job.attempt, status="completed", output=context.output
                    )
                    outcome = "completed"
                duration = time.perf_counter() - started
                headers = {"Nats-Msg-Id": f"result:{job.job_id}:{job.attempt}", "Wf-Worker": self.name}
                _propagator.inject(headers)
                published = await self._publish(
                    result_subject(job.tenant), msgspec.json.encode(result), headers
                )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if not published:
            self._metrics.job(step_type, "unreported", duration)
            # Not acked: JetStream redelivers it after the ack wait and it runs again.
            with contextlib.suppress(Exception):
                await message.nak(delay=self._ack_waits.get(step_type, self.settings.ack_wait_seconds))
            return
        self._metrics.job(step_type, outcome, duration)
        await message.ack()

    async def _execute(self, step: Any, context: WorkflowContext) -> None:
        execute: Callable[[WorkflowContext], Any] = step.execute
        if not inspect.iscoroutinefunction(execute):
            result = await asyncio.to_thread(execute, context)
            if inspect.isawaitable(result):
                await result
        elif getattr(step, "run_in_thread", False):

            def run_on_own_loop() -> None:
                asyncio.run(execute(context))

            await asyncio.to_thread(run_on_own_loop)
        else:
            await execute(context)

    async def _heartbeat(self, step_type: str, message: Msg) -> None:
        interval = max(
            self._ack_waits.get(step_type, self.settings.ack_wait_seconds) * self._heartbeat_fraction, 0.05
        )
        while True:
            await asyncio.sleep(interval)
            try:
                await message.in_progress()
            except Exception as exc:  # disconnected: the next one may get through
                logger.debug("in-progress ack failed: %s", exc)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        assert self._js is not None
        delay = 0.2
        for attempt in range(1, 6):
            try:
                await self._js.publish(subject, body, headers=headers, timeout=5.0)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                logger.warning("publishing a result on %s failed (try %d): %s", subject, attempt, exc)
                if isinstance(exc, nats.errors.ConnectionClosedError):
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
            else:
                return True
        return False


async def _hand_back(messages: list[Msg], /) -> None:
    """Give delivered jobs that never started back to the stream now (a nak), not after the ack wait."""
    for message in messages:
        with contextlib.suppress(Exception):
            await message.nak()
