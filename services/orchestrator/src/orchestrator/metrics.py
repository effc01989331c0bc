"""The orchestrator's Prometheus series, on the platform's per-app registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["OrchestratorMetrics"]


class OrchestratorMetrics:
    """Instances, jobs, tasks, incidents, dropped messages, timers."""

    def __init__(self, registry: CollectorRegistry, /) -> None:
        self.instances = Counter(
            "wf_instances",
            "Instance lifecycle events (started, completed, failed, cancelled).",
            ["event"],
            registry=registry,
        )
        self.jobs_dispatched = Counter(
            "wf_jobs_dispatched", "Machine step attempts dispatched.", ["step_type"], registry=registry
        )
        self.results = Counter(
            "wf_results", "Worker results applied, by status.", ["status"], registry=registry
        )
        self.tasks = Counter("wf_tasks", "Human task commands and completions.", ["event"], registry=registry)
        self.incidents = Counter("wf_incidents", "Incidents raised, by kind.", ["kind"], registry=registry)
        self.dropped = Counter(
            "wf_messages_dropped",
            "Messages and events acked and dropped: stale attempts, unknown jobs or tasks, ended "
            "instances, tenant mismatches, undecodable bodies.",
            ["reason", "event"],
            registry=registry,
        )
        self.timers_fired = Counter(
            "wf_timers_fired", "Durable timers fired, by kind.", ["kind"], registry=registry
        )
        self.write_conflicts = Counter(
            "wf_write_conflicts",
            "Writes that wrote nothing and were done again: a start batch that found an "
            "idempotency key taken (its starts written again one by one; source=start), a "
            "result chunk applied to a cached state that was no longer the stored one (applied "
            "again on the locked rows; source=result).",
            ["source"],
            registry=registry,
        )
        self.result_chunks = Counter(
            "wf_result_chunks",
            "Chunks of worker results applied, by path: cached (to the states this process wrote "
            "last, one statement) or locked (a transaction on the locked rows).",
            ["path"],
            registry=registry,
        )
        self.transition_seconds = Histogram(
            "wf_transition_seconds",
            "Time to apply one event in its transaction (lock, engine, store, outbox), by source.",
            ["source"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
