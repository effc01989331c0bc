"""The event-loop lag sampler: a blocked loop shows in ``wf_event_loop_lag_seconds``."""

from __future__ import annotations

import asyncio
import time

import pytest

from wf_platform.loop_lag import LoopLagMonitor
from wf_platform.metrics import PlatformMetrics

LAG = "wf_event_loop_lag_seconds"


def _samples(metrics: PlatformMetrics, /) -> tuple[float, float]:
    """(count, sum) of the lag histogram."""
    count = metrics.registry.get_sample_value(f"{LAG}_count") or 0.0
    total = metrics.registry.get_sample_value(f"{LAG}_sum") or 0.0
    return count, total


def _at_most(metrics: PlatformMetrics, bound: str, /) -> float:
    return metrics.registry.get_sample_value(f"{LAG}_bucket", {"le": bound}) or 0.0


async def test_a_loop_blocked_for_80_ms_is_observed_as_a_lag_of_at_least_that(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = PlatformMetrics("test")
    monitor = LoopLagMonitor(metrics.loop_lag, interval=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        quiet_count, _ = _samples(metrics)
        # Samples of an idle loop: several, none anywhere near a blocked loop's.
        assert quiet_count >= 3
        assert _at_most(metrics, "0.05") == quiet_count

        # The loop held for 80 ms right after a sample was made ready: that sample waits for it.
        monitor_sampled = asyncio.Event()
        original = monitor._sample  # to block right behind a sample

        def sample_then_signal() -> None:
            original()
            time.sleep(0.08)
            monitor_sampled.set()

        monkeypatch.setattr(monitor, "_sample", sample_then_signal)
        await asyncio.wait_for(monitor_sampled.wait(), timeout=2)
        monkeypatch.setattr(monitor, "_sample", original)
        await asyncio.sleep(0.05)
    finally:
        monitor.stop()
    count, total = _samples(metrics)
    assert count > quiet_count
    assert _at_most(metrics, "0.05") < count, "the blocked sample is in a bucket above 50 ms"
    assert total >= 0.08


async def test_a_stopped_monitor_observes_nothing_more_and_can_start_again() -> None:
    metrics = PlatformMetrics("test")
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    monitor = LoopLagMonitor(metrics.loop_lag, interval=0.005)
    monitor.start()
    monitor.start()  # a second start does not add a second sampler
    await asyncio.sleep(0.1)
    monitor.stop()
    stopped_at, _ = _samples(metrics)
    assert 1 <= stopped_at <= 21, "one sampler at 5 ms over 100 ms: at most 20 samples (and one in flight)"
    assert not monitor.running
    await asyncio.sleep(0.05)
    assert _samples(metrics)[0] == stopped_at

    monitor.start()
    await asyncio.sleep(0.05)
    monitor.stop()
    assert _samples(metrics)[0] > stopped_at
    await asyncio.sleep(0.02)
    assert errors == [], "a stopped monitor leaves no callback behind to fail"
