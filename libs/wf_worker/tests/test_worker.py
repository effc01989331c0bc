"""The worker SDK against a real nats-server: results, errors, concurrency, heartbeats, shutdown, traces."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wf_worker import Worker, WorkerSettings, blocking, durable_name
from workflow_core import BaseMachineStep, RetryableStepError, StepFailedError, WorkflowContext
from workflow_core.messages import JobMessage

from .conftest import Bus


class Double(BaseMachineStep):
    name = "double"
    step_type = "math.double"
    seen: ClassVar[list[dict[str, Any]]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Double.seen.append({"job_id": context.job_id, "attempt": context.attempt, **dict(context.metadata)})
        context.set("doubled", context.get("value") * 2)


async def test_a_job_runs_and_its_output_is_what_the_step_set(bus: Bus) -> None:
    Double.seen.clear()
    await bus.run(bus.worker([Double], name="w-1"))
    job = await bus.job("math.double", {"value": 21, "untouched": True}, attempt=2)
    ((result, headers),) = await bus.results(1)
    assert result.status == "completed" and result.output == {"doubled": 42}
    assert (result.job_id, result.attempt) == (job.job_id, 2)
    assert headers["Nats-Msg-Id"] == f"result:{job.job_id}:2" and headers["Wf-Worker"] == "w-1"
    (seen,) = Double.seen
    assert seen["job_id"] == job.job_id and seen["attempt"] == 2 and seen["tenant"] == bus.tenant
    assert seen["instance_id"] == job.instance_id and seen["step_type"] == "math.double"
    assert seen["definition"] == "test" and seen["version"] == "1.0.0" and seen["delivery"] == 1
    await asyncio.sleep(0.2)
    assert await bus.pending_jobs() == 0  # acked: gone from the work queue


class Flaky(BaseMachineStep):
    step_type = "err.retryable"

    async def execute(self, context: WorkflowContext) -> None:
        raise RetryableStepError("gateway timeout", type="GatewayTimeout")


class Final(BaseMachineStep):
    step_type = "err.final"

    async def execute(self, context: WorkflowContext) -> None:
        raise StepFailedError("card declined", type="CardDeclined")


class Declared(BaseMachineStep):
    step_type = "err.declared"
    non_retryable_errors = (ValueError,)

    async def execute(self, context: WorkflowContext) -> None:
        raise ValueError("bad amount")


class Unexpected(BaseMachineStep):
    step_type = "err.unexpected"

    async def execute(self, context: WorkflowContext) -> None:
        raise KeyError("surprise")


async def test_retryable_and_terminal_errors_are_reported_as_such(bus: Bus) -> None:
    await bus.run(bus.worker([Flaky, Final, Declared, Unexpected]))
    jobs = {
        (await bus.job(t)).job_id: t for t in ("err.retryable", "err.final", "err.declared", "err.unexpected")
    }
    by_type = {}
    for result, _ in await bus.results(4):
        assert result.status == "failed" and result.error is not None
        by_type[jobs[result.job_id]] = result.error
    assert (by_type["err.retryable"].type, by_type["err.retryable"].retryable) == ("GatewayTimeout", True)
    assert (by_type["err.final"].type, by_type["err.final"].retryable) == ("CardDeclined", False)
    assert (by_type["err.declared"].type, by_type["err.declared"].retryable) == ("ValueError", False)
    assert by_type["err.declared"].message == "bad amount"
    assert (by_type["err.unexpected"].type, by_type["err.unexpected"].retryable) == ("KeyError", True)


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1


GAUGE = Gauge()


class SlowA(BaseMachineStep):
    step_type = "cap.a"

    async def execute(self, context: WorkflowContext) -> None:
        GAUGE.enter()
        await asyncio.sleep(0.15)
        GAUGE.leave()
        context.set("done", True)


class SlowB(SlowA):
    step_type = "cap.b"


async def test_the_concurrency_cap_holds_over_every_step_type(bus: Bus) -> None:
    GAUGE.most = GAUGE.now = 0
    for i in range(12):
        await bus.job("cap.a" if i % 2 else "cap.b")
    await bus.run(bus.worker([SlowA, SlowB], concurrency=3))
    results = await bus.results(12)
    assert all(r.status == "completed" for r, _ in results)
    assert GAUGE.most == 3


class Stamp(BaseMachineStep):
    step_type = "lat.stamp"
    started: ClassVar[list[float]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Stamp.started.append(time.monotonic())


async def test_an_idle_worker_starts_a_job_as_it_arrives(bus: Bus) -> None:
    """A pull for several jobs does not hold the first one until more come or the pull's wait ends."""
    Stamp.started.clear()
    await bus.run(bus.worker([Stamp], concurrency=8, fetch_timeout=5.0))
    await asyncio.sleep(0.5)  # idle: its pull request waits on the server
    for expected in range(1, 4):
        published = time.monotonic()
        await bus.job("lat.stamp")
        ((result, _),) = await bus.results(1)
        assert result.status == "completed" and len(Stamp.started) == expected
        print("DELTA", Stamp.started[-1] - published)
        assert Stamp.started[-1] - published < 0.5


async def test_a_deleted_consumer_is_bound_again_and_jobs_keep_running(bus: Bus) -> None:
    Stamp.started.clear()
    await bus.run(bus.worker([Stamp], concurrency=4))
    await bus.js.delete_consumer("WF_JOBS", durable_name("lat.stamp", bus.tenant))
    await bus.job("lat.stamp")  # kept by the work queue until a consumer takes it
    ((result, _),) = await bus.results(1, timeout=30)
    assert result.status == "completed" and len(Stamp.started) == 1


class Long(BaseMachineStep):
    step_type = "hb.long"
    runs: ClassVar[list[int]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Long.runs.append(int(context.metadata["delivery"]))
        await asyncio.sleep(3.3)
        context.set("slept", True)


async def test_heartbeats_keep_a_job_running_3x_the_ack_wait_from_being_redelivered(bus: Bus) -> None:
    Long.runs.clear()
    await bus.run(bus.worker([Long], ack_wait=1.0))
    await bus.job("hb.long")
    ((result, _),) = await bus.results(1, timeout=10)
    assert result.status == "completed"
    await bus.no_more_results(within=1.5)
    assert Long.runs == [1]  # never redelivered, so never run twice


class Half(BaseMachineStep):
    step_type = "stop.half"
    started: ClassVar[list[str]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Half.started.append(str(context.job_id))
        await asyncio.sleep(0.6)
        context.set("finished", True)


async def test_graceful_shutdown_finishes_what_runs_and_loses_no_job(bus: Bus) -> None:
    Half.started.clear()
    jobs = [await bus.job("stop.half") for _ in range(8)]
    first = bus.worker([Half], concurrency=4)
    run = await bus.run(first)
    while len(Half.started) < 4:  # noqa: ASYNC110 - polling a class attribute the steps fill
        await asyncio.sleep(0.02)
    first.stop()
    await asyncio.wait_for(run, timeout=10)
    done = await bus.results(4)
    assert {r.job_id for r, _ in done} == set(Half.started)  # everything started was finished and reported
    assert all(r.status == "completed" for r, _ in done)
    assert await bus.pending_jobs() == 4  # the rest wait in the stream, untouched
    await bus.run(bus.worker([Half], concurrency=4))
    rest = await bus.results(4)
    assert {r.job_id for r, _ in done + rest} == {j.job_id for j in jobs}
    await bus.no_more_results(within=0.5)


class Remember(BaseMachineStep):
    step_type = "redo.remember"
    seen: ClassVar[list[tuple[str | None, int, int]]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Remember.seen.append((context.job_id, context.attempt, int(context.metadata["delivery"])))
        context.set("ok", True)


async def test_a_redelivered_job_runs_again_with_the_same_job_id(bus: Bus) -> None:
    """A worker that dies mid-job never acks it: the next delivery carries the same job id and
    attempt (only ``delivery`` grows), so steps make side effects idempotent on ``context.job_id``."""
    Remember.seen.clear()
    durable = durable_name("redo.remember", bus.tenant)
    subject = f"wf.jobs.{bus.tenant}.redo.remember"
    # The "crashed" member of the worker group: it takes the job and dies without acking.
    crashed = await bus.js.pull_subscribe(
        subject,
        durable=durable,
        stream="WF_JOBS",
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0, max_deliver=10, filter_subject=subject
        ),
    )
    job = await bus.job("redo.remember")
    (taken,) = await crashed.fetch(1, timeout=5)
    assert msgspec.json.decode(taken.data, type=JobMessage).job_id == job.job_id
    await crashed.unsubscribe()
    await bus.run(bus.worker([Remember], ack_wait=1.0))
    ((result, _),) = await bus.results(1, timeout=10)
    assert result.job_id == job.job_id and result.status == "completed"
    assert Remember.seen == [(job.job_id, 1, 2)]


@blocking
class Blocking(BaseMachineStep):
    step_type = "thread.async_blocking"

    async def execute(self, context: WorkflowContext) -> None:
        time.sleep(0.4)  # noqa: ASYNC251 - blocks its own loop in its own thread, not the worker's
        context.set("slept", "async")


class SyncBlocking(BaseMachineStep):
    step_type = "thread.sync"
    run_in_thread = True

    def execute(self, context: WorkflowContext) -> None:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        time.sleep(0.4)
        context.set("slept", "sync")


async def test_blocking_steps_run_in_threads_without_stalling_the_worker(bus: Bus) -> None:
    await bus.run(bus.worker([Blocking, SyncBlocking], concurrency=4))
    started = time.perf_counter()
    for _ in range(2):
        await bus.job("thread.async_blocking")
        await bus.job("thread.sync")
    results = await bus.results(4)
    assert sorted(r.output["slept"] for r, _ in results) == ["async", "async", "sync", "sync"]
    assert time.perf_counter() - started < 1.2  # four 0.4 s sleeps overlapped


async def test_a_job_past_its_deadline_is_skipped(bus: Bus) -> None:
    Double.seen.clear()
    await bus.run(bus.worker([Double]))
    await bus.job("math.double", {"value": 1}, deadline=datetime.now(UTC) - timedelta(seconds=5))
    await bus.no_more_results(within=1.0)
    assert Double.seen == [] and await bus.pending_jobs() == 0


async def test_the_worker_span_continues_the_jobs_trace(bus: Bus) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-orchestrator")
    with tracer.start_as_current_span("dispatch math.double", kind=SpanKind.PRODUCER) as dispatch:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    await bus.run(bus.worker([Double], tracer_provider=provider))
    await bus.job("math.double", {"value": 2}, headers=carrier)
    ((_, headers),) = await bus.results(1)
    trace_id = format(dispatch.get_span_context().trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id  # the result continues the trace
    for _ in range(100):  # the span ends just after the result is published
        spans = [s for s in exporter.get_finished_spans() if s.name == "worker math.double"]
        if spans:
            break
        await asyncio.sleep(0.02)
    (span,) = spans
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == dispatch.get_span_context().trace_id
    assert span.parent.span_id == dispatch.get_span_context().span_id
    assert span.kind is SpanKind.CONSUMER and span.attributes is not None
    assert span.attributes["wf.step_type"] == "math.double" and span.attributes["wf.tenant"] == bus.tenant


def test_invalid_steps_are_refused() -> None:
    class NoType(BaseMachineStep):
        pass

    with pytest.raises(ValueError, match="no valid step type"):
        Worker([NoType])
    with pytest.raises(ValueError, match="served by both"):
        Worker([Double, Double()])
    with pytest.raises(ValueError, match="at least one"):
        Worker([])


def test_settings_from_the_environment() -> None:
    settings = WorkerSettings.from_env(
        {
            "WF_WORKER_NATS_URL": "nats://a:4222,nats://b:4222",
            "WF_WORKER_TENANT": "*",
            "WF_WORKER_CONCURRENCY": "4",
            "WF_WORKER_NATS_USER": "u",
            "WF_WORKER_NATS_PASSWORD": "p",
            "WF_WORKER_HEALTH_PORT": "8080",
        }
    )
    assert settings.tenant is None and settings.concurrency == 4 and settings.health_port == 8080
    options = settings.connect_options()
    assert options["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert (options["user"], options["password"]) == ("u", "p")
    assert WorkerSettings.from_env({"WF_WORKER_TENANT": "acme"}, concurrency=2).tenant == "acme"
    with pytest.raises(ValueError, match="WF_WORKER_CONCURRENCY"):
        WorkerSettings.from_env({"WF_WORKER_CONCURRENCY": "many"})


async def test_health_endpoint_serves_liveness_readiness_and_metrics(bus: Bus) -> None:
    import httpx

    worker = bus.worker([Double], settings=WorkerSettings(health_port=0))
    await bus.run(worker)
    assert worker.health_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.health_port}") as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).json() == {"status": "ok"}
        await bus.job("math.double", {"value": 3})
        await bus.results(1)
        metrics = (await http.get("/metrics")).text
    assert 'wf_worker_jobs_total{outcome="completed",step_type="math.double"}' in metrics
