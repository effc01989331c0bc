"""Bookkeeping for fault-injection runs: a timeline of faults and recoveries, and RSS trends.

```python
timeline = FaultTimeline()
with timeline.fault("nats-server kill -9") as fault:
    nats.kill(); nats.restart()
    fault.recovered_when(lambda: stack_is_healthy())   # bounded wait, records the recovery time
print(timeline.render())

rss = RssSampler({"orchestrator": orchestrator.pid}, interval=2.0)
rss.start(); ...; rss.stop()
trend = rss.trends()["orchestrator"]    # slope in MB per minute over the run
```

RSS comes from ``/proc/<pid>/status`` (``VmRSS``), so no psutil is needed; on a system without
/proc the sampler records nothing. A process that is restarted under the same name (a fault that
kills it) is followed through a callable that returns its current pid.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Fault", "FaultTimeline", "RssSampler", "RssTrend", "linear_slope", "rss_bytes"]


@dataclass
class Fault:
    """One injected fault: when (seconds since the timeline began), what, and how long recovery took."""

    at: float
    name: str
    detail: str = ""
    duration: float = 0.0
    """How long the fault itself lasted (a pause, a blackhole), 0 for an instant one (a kill)."""
    recovery: float | None = None
    """Seconds from the end of the fault until the system was seen healthy again; None if never."""
    _started: float = field(default=0.0, repr=False)
    ended_at: float | None = field(default=None, repr=False)
    """Monotonic time the fault ended (set by `ended`)."""

    def ended(self) -> None:
        """Mark the end of the fault (the resume, the restart); recovery is measured from here."""
        self.ended_at = time.monotonic()
        self.duration = self.ended_at - self._started

    def recovered_when(self, healthy: Callable[[], bool], /, *, timeout: float = 60.0) -> float | None:
        """Poll `healthy` (bounded by `timeout`) and record the recovery time; None if it never held."""
        if self.ended_at is None:
            self.ended()
        assert self.ended_at is not None
        deadline = self.ended_at + timeout
        while time.monotonic() < deadline:
            if healthy():
                self.recovery = time.monotonic() - self.ended_at
                return self.recovery
            time.sleep(0.1)
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "at": round(self.at, 3),
            "fault": self.name,
            "detail": self.detail,
            "duration": round(self.duration, 3),
            "recovery": None if self.recovery is None else round(self.recovery, 3),
        }


class FaultTimeline:
    """Faults in the order they were injected."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.faults: list[Fault] = []

    @contextlib.contextmanager
    def fault(self, name: str, /, *, detail: str = "") -> Generator[Fault]:
        """Record a fault; its end is when the block exits unless the block marks it earlier."""
        now = time.monotonic()
        record = Fault(at=now - self.began, name=name, detail=detail, _started=now)
        self.faults.append(record)
        yield record
        if record.ended_at is None:
            record.ended()

    def to_json(self) -> list[dict[str, Any]]:
        """Every fault as a JSON-ready record."""
        return [f.to_json() for f in self.faults]

    def render(self) -> str:
        """A fixed-width table: time, fault, duration, recovery."""
        lines = [f"{'t (s)':>8}  {'fault':<34} {'lasted (s)':>10} {'recovered in (s)':>16}  detail"]
        for f in self.faults:
            recovery = "never" if f.recovery is None else f"{f.recovery:.2f}"
            lines.append(f"{f.at:8.1f}  {f.name:<34} {f.duration:10.2f} {recovery:>16}  {f.detail}")
        return "\n".join(lines)


def rss_bytes(pid: int, /) -> int | None:
    """The resident set size of `pid` in bytes, or None when it is gone or /proc is unavailable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def linear_slope(points: list[tuple[float, float]], /) -> float:
    """The least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


@dataclass(frozen=True)
class RssTrend:
    """The RSS of one process over a run."""

    samples: int
    first_mb: float
    last_mb: float
    max_mb: float
    slope_mb_per_min: float
    """Least-squares slope over the longest lifetime, after its warm-up (see `RssSampler.trends`)."""
    lifetime_seconds: float = 0.0
    """How long that lifetime lasted."""
    lifetimes: int = 1
    """How many processes (pids) were sampled under this name."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "samples": self.samples,
            "first_mb": round(self.first_mb, 1),
            "last_mb": round(self.last_mb, 1),
            "max_mb": round(self.max_mb, 1),
            "slope_mb_per_min": round(self.slope_mb_per_min, 3),
            "lifetime_seconds": round(self.lifetime_seconds, 1),
            "lifetimes": self.lifetimes,
        }


class RssSampler:
    """Samples the RSS of named processes every `interval` seconds in a daemon thread.

    Args:
        pids: name -> pid, or name -> a callable returning the current pid (None while it is down).
        interval: seconds between samples.
    """

    def __init__(
        self, pids: Mapping[str, int | Callable[[], int | None]], /, *, interval: float = 2.0
    ) -> None:
        self._pids = dict(pids)
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in self._pids}
        """name -> (seconds since start, RSS in MB)."""
        self.pids: dict[str, list[int]] = {name: [] for name in self._pids}
        """name -> the pid of each sample (a restarted process starts a new lifetime)."""
        self._began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        """Begin sampling (one sample right away)."""
        self._began = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (one last sample first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.sample()

    def sample(self) -> None:
        """Take one sample of every process that is up."""
        now = time.monotonic() - self._began
        for name, source in self._pids.items():
            pid = source() if callable(source) else source
            if pid is None:
                continue
            size = rss_bytes(pid)
            if size is not None:
                self.samples[name].append((now, size / 1024**2))
                self.pids[name].append(pid)

    def trends(self, *, warmup_fraction: float = 0.25) -> dict[str, RssTrend]:
        """Per process: first, last and peak RSS, and the slope over its longest lifetime.

        A process killed and restarted by a fault starts again from a small RSS, so the slope is
        fitted on the longest run of samples with one pid (`RssTrend.lifetime_seconds`), after the
        first `warmup_fraction` of that lifetime: caches, pools and allocator arenas fill up early,
        while a leak shows as a slope that persists once they are warm.
        """
        trends: dict[str, RssTrend] = {}
        for name, points in self.samples.items():
            if not points:
                continue
            pids = self.pids[name]
            best: tuple[int, int] = (0, 1)
            best_span = -1.0
            start = 0
            for i in range(1, len(points) + 1):
                if i == len(points) or pids[i] != pids[start]:
                    if (span := points[i - 1][0] - points[start][0]) > best_span:
                        best, best_span = (start, i), span
                    start = i
            lifetime = points[best[0] : best[1]]
            span = lifetime[-1][0] - lifetime[0][0]
            steady = [p for p in lifetime if p[0] >= lifetime[0][0] + span * warmup_fraction] or lifetime
            trends[name] = RssTrend(
                samples=len(points),
                first_mb=points[0][1],
                last_mb=points[-1][1],
                max_mb=max(y for _, y in points),
                slope_mb_per_min=linear_slope([(x / 60.0, y) for x, y in steady]),
                lifetime_seconds=span,
                lifetimes=len(set(pids)),
            )
        return trends

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
