"""A Prometheus histogram read from a ``/metrics`` page, and what was observed between two reads.

Only the standard library and ``prometheus_client`` (a dependency of every service), so the test
environment imports it and checks it against the services' real exposition.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["HistogramSnapshot", "read_histogram"]


@dataclass(frozen=True)
class HistogramSnapshot:
    """A cumulative histogram: upper bound -> observations at or below it, their count and sum."""

    buckets: dict[float, float]
    count: float
    total: float

    def since(self, before: HistogramSnapshot, /) -> dict[str, float]:
        """Milliseconds of the observations between ``before`` and this snapshot (both of seconds):
        their number, mean (exact) and p50 / p99 (interpolated inside a bucket, so as coarse as the
        buckets; an observation above the last finite bound counts as that bound)."""
        count = self.count - before.count
        if count <= 0:
            return {"samples": 0}
        bounds = sorted(self.buckets)
        cumulative = [self.buckets[b] - before.buckets.get(b, 0.0) for b in bounds]

        def quantile(q: float) -> float:
            rank, lower, below = q * count, 0.0, 0.0
            for bound, seen in zip(bounds, cumulative, strict=True):
                if seen >= rank:
                    if bound == float("inf"):
                        return lower
                    inside = seen - below
                    return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
                lower, below = bound, seen
            return lower

        return {
            "samples": int(count),
            "mean": round((self.total - before.total) / count * 1000, 3),
            "p50": round(quantile(0.5) * 1000, 3),
            "p99": round(quantile(0.99) * 1000, 3),
        }


def read_histogram(exposition: str, name: str, /) -> HistogramSnapshot:
    """The histogram ``name`` (one without labels) in a Prometheus text exposition; an empty
    snapshot when the page has none."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return HistogramSnapshot(buckets, count, total)
