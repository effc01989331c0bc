"""The bench's reading of a service's histogram (``bench/histogram.py``), against the exposition the
services really serve: the loop lag it reports per suite phase must be the observations of that
phase, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import pytest

from wf_platform.loop_lag import LOOP_LAG_METRIC
from wf_platform.metrics import PlatformMetrics


@pytest.fixture(scope="module")
def histogram(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("histogram")


def _page(metrics: PlatformMetrics) -> str:
    return metrics.render().decode()


def test_the_bench_reads_the_lag_histogram_the_services_expose(histogram: ModuleType) -> None:
    metrics = PlatformMetrics("test")
    for seconds in (0.0002, 0.0002, 0.003):
        metrics.loop_lag.observe(seconds)

    snapshot = histogram.read_histogram(_page(metrics), LOOP_LAG_METRIC)

    assert snapshot.count == 3
    assert snapshot.total == pytest.approx(0.0034)
    assert snapshot.buckets[0.00025] == 2
    assert snapshot.buckets[0.005] == 3
    assert snapshot.buckets[math.inf] == 3


def test_a_phase_counts_only_what_was_observed_during_it(histogram: ModuleType) -> None:
    metrics = PlatformMetrics("test")
    for _ in range(50):
        metrics.loop_lag.observe(0.00005)  # before the phase, in the lowest bucket: must not show
    before = histogram.read_histogram(_page(metrics), LOOP_LAG_METRIC)
    for _ in range(99):
        metrics.loop_lag.observe(0.0003)  # (0.00025, 0.0005]
    metrics.loop_lag.observe(0.004)  # (0.0025, 0.005]
    after = histogram.read_histogram(_page(metrics), LOOP_LAG_METRIC)

    phase = after.since(before)

    assert phase["samples"] == 100
    assert phase["mean"] == pytest.approx((99 * 0.3 + 4) / 100, abs=0.001)
    # Interpolated inside the bucket that holds the rank: half of 99 observations spread over
    # (0.25, 0.5] ms puts the median at 0.25 + 0.25 * 50/99 ms.
    assert phase["p50"] == pytest.approx(0.25 + 0.25 * 50 / 99, abs=0.001)
    assert 0.25 < phase["p99"] <= 0.5
    assert phase["p99"] == pytest.approx(0.5, abs=0.001)


def test_a_rank_beyond_the_last_finite_bucket_reads_as_that_bound(histogram: ModuleType) -> None:
    metrics = PlatformMetrics("test")
    before = histogram.read_histogram(_page(metrics), LOOP_LAG_METRIC)
    for _ in range(10):
        metrics.loop_lag.observe(3.0)  # above the last finite bound (1 s)

    phase = histogram.read_histogram(_page(metrics), LOOP_LAG_METRIC).since(before)

    assert phase == {"samples": 10, "mean": 3000.0, "p50": 1000.0, "p99": 1000.0}


def test_no_observation_in_a_phase_is_reported_as_none(histogram: ModuleType) -> None:
    metrics = PlatformMetrics("test")
    metrics.loop_lag.observe(0.001)
    page = _page(metrics)
    snapshot = histogram.read_histogram(page, LOOP_LAG_METRIC)

    assert snapshot.since(snapshot) == {"samples": 0}
    assert histogram.read_histogram(page, "wf_no_such_histogram").count == 0
