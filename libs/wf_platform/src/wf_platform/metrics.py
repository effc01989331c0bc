"""Prometheus metrics: one registry per app, HTTP metrics middleware, and the platform's own series.

Every app has its own :class:`~prometheus_client.CollectorRegistry` (several apps in one test process
do not collide); ``GET /metrics`` renders it. Services register their series on ``metrics.registry``.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from wf_platform.loop_lag import LOOP_LAG_METRIC

__all__ = ["HttpMetricsMiddleware", "PlatformMetrics", "metrics_route"]


class PlatformMetrics:
    """The platform's series (HTTP, outbox, tenants) in a fresh registry."""

    def __init__(self, service: str, /) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "wf_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "wf_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.outbox_pending = Gauge(
            "wf_outbox_pending_messages", "Outbox rows not yet published.", registry=self.registry
        )
        self.outbox_lag = Gauge(
            "wf_outbox_lag_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "wf_outbox_published_messages", "Outbox rows published and marked sent.", registry=self.registry
        )
        self.outbox_marked = Counter(
            "wf_outbox_marked_messages",
            "Published outbox rows marked sent, by who wrote the mark: a service statement that "
            "carried it (write) or the relay's own statement (relay).",
            ["by"],
            registry=self.registry,
        )
        self.outbox_publish_errors = Counter(
            "wf_outbox_publish_errors", "Failed outbox publishes (retried later).", registry=self.registry
        )
        self.loop_lag = Histogram(
            LOOP_LAG_METRIC,
            "How long a callback made ready waits for this process's event loop to run it, sampled "
            "every 50 ms: the loop's saturation (wf_platform.loop_lag).",
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.tenants_provisioned = Counter(
            "wf_tenants_provisioned",
            "Tenant schemas created or migrated by this process.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts requests and observes latency by route template (never by raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, *, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("path_template") or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)


def metrics_route(metrics: PlatformMetrics, /) -> Any:
    """The ``GET /metrics`` handler for one app."""

    @get("/metrics", include_in_schema=False, sync_to_thread=False, name="metrics")
    def _metrics() -> Response[bytes]:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return _metrics
