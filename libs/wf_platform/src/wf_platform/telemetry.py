"""Tracing: the TracerProvider, W3C ``traceparent`` in NATS headers, and span helpers.

The provider exports with OTLP/HTTP; the exporter reads the standard ``OTEL_EXPORTER_OTLP_*``
variables, ``OTEL_TRACES_SAMPLER`` picks the sampler. ``OTEL_TRACES_EXPORTER=none`` switches export
off: spans are then not recorded until something exports them (:func:`add_span_processor`), but
they still get ids, so trace ids still flow through logs and messages. Recording spans that nobody
exports cost ~15 % of the orchestrator's CPU. The provider is installed as the global one once per
process; later calls (several apps in one test process) reuse it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, Sampler, SamplingResult
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wf_platform.settings import TelemetrySettings

__all__ = [
    "RequestTracingMiddleware",
    "add_span_processor",
    "consumer_span",
    "continued_span",
    "current_trace_id",
    "extract_context",
    "inject_trace_headers",
    "install_tracer_provider",
    "span",
    "tracer",
]

logger = logging.getLogger("wf_platform.telemetry")

_propagator = TraceContextTextMapPropagator()
_installed: TracerProvider | None = None


class _RecordOnceExported(Sampler):
    """Drops every span (ids are still made) until :func:`add_span_processor` gives them a reader."""

    def __init__(self) -> None:
        self.delegate: Sampler = ALWAYS_OFF

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self.delegate.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"RecordOnceExported({self.delegate.get_description()})"


def install_tracer_provider(settings: TelemetrySettings, /) -> TracerProvider:
    """Create the process's TracerProvider (once) with the configured exporter and make it global."""
    global _installed  # noqa: PLW0603 - one provider per process is the OpenTelemetry model
    if _installed is not None:
        return _installed
    exporter_name = settings.traces_exporter.lower()
    exporting = exporter_name in {"otlp", "console"}
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        # None: the SDK's default (parent-based, always on) or OTEL_TRACES_SAMPLER
        sampler=None if exporting else _RecordOnceExported(),
    )
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = (
            OTLPSpanExporter(endpoint=settings.otlp_endpoint)
            if settings.otlp_endpoint
            else OTLPSpanExporter()
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter_name != "none":
        logger.warning("unknown OTEL_TRACES_EXPORTER %r; not exporting spans", settings.traces_exporter)
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def add_span_processor(processor: SpanProcessor, /) -> None:
    """Export spans through ``processor`` too (tests: an in-memory or local exporter); when the
    process was not exporting, spans are recorded from now on."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise RuntimeError("install_tracer_provider has not run in this process")
    provider.add_span_processor(processor)
    sampler = provider.sampler
    if isinstance(sampler, _RecordOnceExported):
        sampler.delegate = DEFAULT_ON


_tracer: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The platform's tracer (from the global provider; made once per provider, as the SDK builds
    a new one on every ``get_tracer``)."""
    global _tracer  # noqa: PLW0603 - a cache of the global provider's tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("wf_platform"))
    return _tracer[1]


def _recording() -> bool:
    """False while the installed provider drops every span (``OTEL_TRACES_EXPORTER=none`` and no
    :func:`add_span_processor` yet); True otherwise, including under a provider we did not install."""
    provider = _installed
    if provider is None or trace.get_tracer_provider() is not provider:
        return True
    sampler = provider.sampler
    return not isinstance(sampler, _RecordOnceExported) or sampler.delegate is not ALWAYS_OFF


def inject_trace_headers(headers: dict[str, str], /) -> dict[str, str]:
    """Add the current span's ``traceparent`` (and ``tracestate``) unless ``headers`` has one."""
    if "traceparent" not in headers:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        headers.update(carrier)
    return headers


def extract_context(headers: Mapping[str, str] | None, /) -> otel_context.Context:
    """The trace context carried by message headers (an empty context when there is none)."""
    return _propagator.extract(dict(headers or {}))


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or ``None`` outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# While spans are not recorded, the helpers below make none when there is a parent: the parent's
# context becomes current instead, so the trace id still reaches logs and outgoing messages, at
# none of the cost of a span nobody will see (ids, sampler, context objects: ~8 % of the
# orchestrator's CPU per step). Only a span without a parent is made, because it starts the trace.


@contextmanager
def span(name: str, /, *, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Generator[Span]:
    """A child span of the current one."""
    if not _recording():
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            yield current
            return
    with tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


@contextmanager
def continued_span(
    name: str,
    headers: Mapping[str, str] | None,
    /,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: Any,
) -> Generator[Span]:
    """A span continuing the trace whose ``traceparent`` is in ``headers`` (a message's, or one
    stored with an instance)."""
    parent = extract_context(headers)
    if not _recording():
        parent_span = trace.get_current_span(parent)
        if parent_span.get_span_context().is_valid:
            token = otel_context.attach(parent)
            try:
                yield parent_span
            finally:
                otel_context.detach(token)
            return
    with tracer().start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as current:
        yield current


class RequestTracingMiddleware:
    """The HTTP side of tracing (an ASGI middleware).

    While spans are recorded: OpenTelemetry's ASGI middleware (``traced``, a SERVER span per
    request). While nothing records them: the caller's ``traceparent`` is made current as it is (or,
    without one, a fresh trace id), so the request's logs, the instance it starts and the messages
    it causes still share one trace id, without the middleware's per-request work (span, attributes,
    wrapped ``receive`` and ``send``: ~6 % of the orchestrator's CPU on starts).
    """

    def __init__(self, app: Any, *, traced: Callable[[Any], Any]) -> None:
        self.app = app
        self.traced = traced(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _recording():
            await self.traced(scope, receive, send)
            return
        carrier = {
            name.decode(): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        parent = extract_context(carrier)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            # Ids only, not secrets: the SDK's own RandomIdGenerator uses ``random`` too.
            fresh = SpanContext(
                trace_id=random.getrandbits(128), span_id=random.getrandbits(64), is_remote=False
            )
            parent = trace.set_span_in_context(NonRecordingSpan(fresh), parent)
        token = otel_context.attach(parent)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


@contextmanager
def consumer_span(name: str, headers: Mapping[str, str] | None, /, **attributes: Any) -> Generator[Span]:
    """A CONSUMER span continuing the trace of a received message's ``traceparent``."""
    with continued_span(name, headers, kind=SpanKind.CONSUMER, **attributes) as current:
        yield current
