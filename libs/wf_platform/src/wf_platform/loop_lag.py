"""How long this process's event loop makes ready work wait: its saturation, as one histogram.

A service runs on one thread and one event loop. Each ``await`` that resumes (a reply from
Postgres, a NATS message, a committed batch) is a callback made ready, which waits until the loop
has run the callbacks ahead of it. At low load that wait is microseconds; as the loop's share of a
core approaches one, it grows without bound, and a request that resumes twenty times pays it twenty
times. CPU usage alone does not show this (0.7 cores looks like headroom); this does.

:class:`LoopLagMonitor` samples it: every ``interval`` seconds it makes a callback ready
(``call_soon``) and observes how long the loop took to run it, into
``wf_event_loop_lag_seconds``. Plain callbacks, no task: a sample costs a few microseconds (20
a second by default).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

__all__ = ["LOOP_LAG_METRIC", "LoopLagMonitor"]

LOOP_LAG_METRIC = "wf_event_loop_lag_seconds"
"""The histogram's name on ``/metrics`` (operators alert on it; the benchmark reads it)."""


class LoopLagMonitor:
    """Samples the event loop's lag into ``histogram`` every ``interval`` seconds while started."""

    def __init__(self, histogram: Histogram, /, *, interval: float = 0.05) -> None:
        self.histogram = histogram
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Handle | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start sampling on the running loop (a second call does nothing)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.interval, self._sample)

    def stop(self) -> None:
        """Stop sampling (a sample in flight is dropped)."""
        for handle in (self._timer, self._pending):
            if handle is not None:
                handle.cancel()
        self._loop = self._timer = self._pending = None

    def _sample(self) -> None:
        assert self._loop is not None
        self._pending = self._loop.call_soon(self._observe, time.perf_counter())

    def _observe(self, made_ready: float, /) -> None:
        self.histogram.observe(time.perf_counter() - made_ready)
        assert self._loop is not None
        self._pending = None
        self._timer = self._loop.call_later(self.interval, self._sample)
