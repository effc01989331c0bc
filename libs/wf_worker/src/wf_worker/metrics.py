"""Prometheus metrics of a worker process, when ``prometheus-client`` is installed (else no-ops).

- ``wf_worker_jobs_total{step_type, outcome}``: jobs handled; outcome is ``completed``,
  ``failed_retryable``, ``failed_final``, ``expired`` (its deadline passed before it ran),
  ``undecodable``, or ``unreported`` (the result could not be published; it will be redelivered);
- ``wf_worker_job_duration_seconds{step_type}``: time spent in ``execute``;
- ``wf_worker_jobs_in_flight``: jobs running now;
- ``wf_worker_redeliveries_total{step_type}``: jobs received more than once (a worker died, an ack
  was lost).
"""

from __future__ import annotations

from typing import Any

__all__ = ["WorkerMetrics", "metrics", "render"]


class WorkerMetrics:
    """The worker's instruments; every method is a no-op without prometheus-client."""

    def __init__(self) -> None:
        try:
            import prometheus_client
        except ImportError:  # the optional extra is not installed
            self._jobs: Any = None
            return
        self._jobs = prometheus_client.Counter(
            "wf_worker_jobs", "Jobs handled by outcome", ["step_type", "outcome"]
        )
        self._duration: Any = prometheus_client.Histogram(
            "wf_worker_job_duration_seconds",
            "Time spent in execute",
            ["step_type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self._in_flight: Any = prometheus_client.Gauge("wf_worker_jobs_in_flight", "Jobs running now")
        self._redeliveries: Any = prometheus_client.Counter(
            "wf_worker_redeliveries", "Jobs received more than once", ["step_type"]
        )

    def job(self, step_type: str, outcome: str, duration: float | None = None) -> None:
        """Count one handled job (and its execution time)."""
        if self._jobs is None:
            return
        self._jobs.labels(step_type=step_type, outcome=outcome).inc()
        if duration is not None:
            self._duration.labels(step_type=step_type).observe(duration)

    def redelivered(self, step_type: str) -> None:
        """Count a redelivery."""
        if self._jobs is not None:
            self._redeliveries.labels(step_type=step_type).inc()

    def in_flight(self, delta: int) -> None:
        """Jobs started (+1) or finished (-1)."""
        if self._jobs is not None:
            self._in_flight.inc(delta)


_metrics: WorkerMetrics | None = None


def metrics() -> WorkerMetrics:
    """The process's metrics (created once: Prometheus refuses a metric registered twice)."""
    global _metrics  # noqa: PLW0603 - one registry per process is the Prometheus model
    if _metrics is None:
        _metrics = WorkerMetrics()
    return _metrics


def render() -> tuple[bytes, str] | None:
    """The Prometheus exposition of the default registry and its content type, if available."""
    try:
        import prometheus_client
    except ImportError:
        return None
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
