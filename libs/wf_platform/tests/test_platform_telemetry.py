"""Tracing while nothing exports: trace ids still flow, no span is made under a parent.

The tracer provider is global and installed once per process, so each case runs in a fresh
interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

_SCRIPT = textwrap.dedent(
    f"""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import asyncio

    from litestar.plugins.opentelemetry import OpenTelemetryConfig

    from wf_platform.settings import TelemetrySettings
    from wf_platform.telemetry import (
        RequestTracingMiddleware, add_span_processor, consumer_span, continued_span, current_trace_id,
        inject_trace_headers, install_tracer_provider, span,
    )

    provider = install_tracer_provider(TelemetrySettings(service_name="t", traces_exporter="none"))
    seen = []

    async def app(scope, receive, send):
        seen.append(current_trace_id())
        await send({{"type": "http.response.start", "status": 204, "headers": []}})
        await send({{"type": "http.response.body", "body": b""}})

    http = RequestTracingMiddleware(app, traced=OpenTelemetryConfig(tracer_provider=provider).middleware)

    def request(*headers):
        scope = {{
            "type": "http", "method": "GET", "path": "/v1/x", "raw_path": b"/v1/x", "query_string": b"",
            "headers": list(headers), "http_version": "1.1", "scheme": "http", "root_path": "",
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234),
        }}

        async def receive():
            return {{"type": "http.request", "body": b"", "more_body": False}}

        async def send(message):
            pass

        asyncio.run(http(scope, receive, send))
        return seen[-1]

    # Requests while nothing records: the caller's trace, else a fresh one per request.
    assert request((b"traceparent", b"{_PARENT}")) == "0af7651916cd43dd8448eb211c80319c"
    first, second = request(), request()
    assert first and second and first != second

    # Not recording: a root span still starts a trace (an id to log and to send on).
    with span("root") as root:
        assert root.get_span_context().is_valid
        assert not root.is_recording()
        root_parent = inject_trace_headers({{}})["traceparent"]
        with span("child"):  # under a parent: no new span, the parent's context is sent on
            assert inject_trace_headers({{}})["traceparent"] == root_parent

    # A message's context becomes current as it is: same trace id, same parent span id.
    with consumer_span("result", {{"traceparent": "{_PARENT}"}}):
        assert current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
        assert inject_trace_headers({{}})["traceparent"] == "{_PARENT}"
    assert current_trace_id() is None  # and is detached afterwards

    # Once something exports, spans are made and recorded, a SERVER span per request included.
    exporter = InMemorySpanExporter()
    add_span_processor(SimpleSpanProcessor(exporter))
    assert request((b"traceparent", b"{_PARENT}")) == "0af7651916cd43dd8448eb211c80319c"
    assert [s.kind.name for s in exporter.get_finished_spans()][-1] == "SERVER"
    exporter.clear()
    with continued_span("apply", {{"traceparent": "{_PARENT}"}}) as made:
        assert made.is_recording()
        sent = inject_trace_headers({{}})["traceparent"]
        assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
        assert sent.split("-")[2] != "b7ad6b7169203331"  # a span of its own
    assert [s.name for s in exporter.get_finished_spans()] == ["apply"]
    assert exporter.get_finished_spans()[0].parent.span_id == 0xB7AD6B7169203331
    print("ok")
    """
)


def test_spans_while_not_exporting_and_after() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
