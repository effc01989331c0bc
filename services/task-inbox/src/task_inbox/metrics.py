"""The inbox's Prometheus series, registered on the app's registry (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["InboxMetrics"]


class InboxMetrics:
    """Task messages consumed, actions taken, list latency."""

    def __init__(self, registry: CollectorRegistry, /) -> None:
        self.messages = Counter(
            "wf_inbox_task_messages",
            "Task messages from the orchestrator by event and outcome (applied, duplicate, ...).",
            ["event", "outcome"],
            registry=registry,
        )
        self.actions = Counter(
            "wf_inbox_task_actions",
            "Claims, unclaims, assignments and completions made by people.",
            ["action"],
            registry=registry,
        )
        self.consume_seconds = Histogram(
            "wf_inbox_consume_seconds",
            "Time to apply one task message.",
            ["event"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
