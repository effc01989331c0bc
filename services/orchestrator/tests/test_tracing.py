"""One trace per instance: the real OTLP/HTTP exporter sends to a small receiver run by this test."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from wf_platform.telemetry import add_span_processor, extract_context, inject_trace_headers
from wf_platform.testing import serve
from wf_stack import free_port
from workflow_core.messages import JobMessage, JobResult

from .conftest import Suite


class Receiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "name": span.name,
                            "scope": scope_spans.scope.name,
                            "kind": span.kind,
                        }
                    )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def test_every_span_of_an_instance_shares_its_trace_id(suite: Suite) -> None:
    receiver = Receiver()
    port = free_port()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    async with serve(receiver, port):
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        # A batch processor exports from its own thread: the receiver runs on this event loop.
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=100)
        add_span_processor(processor)
        try:
            tracer = trace.get_tracer("test-worker")

            async def traced_worker(job: JobMessage) -> JobResult:
                return JobResult(
                    job_id=job.job_id, attempt=job.attempt, status="completed", output={"ok": True}
                )

            await suite.register(
                {
                    "name": "traced",
                    "version": "1.0.0",
                    "steps": {"a": {"type": "machine", "step_type": "t.step"}},
                }
            )
            subscription = await suite.js.pull_subscribe(
                f"wf.jobs.{suite.tenant}.t.step", durable=f"tw-{suite.tenant}", stream="WF_JOBS"
            )
            started = await suite.start("traced")
            (message,) = await subscription.fetch(1, timeout=10)
            job = msgspec.json.decode(message.data, type=JobMessage)
            assert message.headers is not None and "traceparent" in message.headers
            with tracer.start_as_current_span(
                "worker t.step", context=extract_context(message.headers), kind=SpanKind.CONSUMER
            ):
                result = await traced_worker(job)
                headers = inject_trace_headers({"Nats-Msg-Id": f"r:{job.job_id}:1"})
                await suite.js.publish(
                    f"wf.results.{suite.tenant}", msgspec.json.encode(result), headers=headers
                )
            await message.ack()
            await suite.wait_status(started["id"], "completed")
            await asyncio.sleep(0.3)
            await asyncio.to_thread(processor.force_flush)
        finally:
            await asyncio.to_thread(processor.shutdown)
    by_trace: dict[str, list[str]] = defaultdict(list)
    for span in receiver.spans:
        by_trace[span["trace_id"]].append(span["name"])
    names = by_trace[started["trace_id"]]
    assert any(name.startswith("POST /v1/instances") for name in names), names  # the start request
    assert any(name.startswith("GET /v1/definitions/traced") for name in names), names  # the registry
    assert "workflow traced" in names
    assert any(name.startswith("dispatch t.step") for name in names), names
    assert "worker t.step" in names  # the test worker, continued from the job's traceparent
    assert "result" in names and "workflow.StepCompleted" in names
