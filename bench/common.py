"""What every benchmark module shares: latency statistics, the per-process CPU/RSS sampler, and
the result record. Standard library + psutil only, so the comparison environment
(``bench/.venv-compare``, where temporalio and litestar-workflows live) imports it too.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import psutil

__all__ = ["PacedRun", "ProcessSampler", "ShapeResult", "paced", "percentiles", "summarize_latencies"]

T = TypeVar("T")


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (plus mean and max) of ``values``; empty input gives NaNs."""
    data = sorted(values)
    out: dict[str, float] = {}
    for q in qs:
        if not data:
            out[f"p{int(q)}"] = math.nan
            continue
        rank = max(1, math.ceil(q / 100 * len(data)))
        out[f"p{int(q)}"] = data[rank - 1]
    out["mean"] = sum(data) / len(data) if data else math.nan
    out["max"] = data[-1] if data else math.nan
    return out


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float]:
    """Percentiles in milliseconds, rounded to 0.01 ms."""
    return {k: round(v * 1000, 2) for k, v in percentiles(seconds).items()}


@dataclass
class ShapeResult:
    """One measured phase of one shape on one system."""

    system: str
    shape: str
    phase: str
    """``max``: closed loop with ``clients`` clients; ``half``: paced at half the max rate."""
    clients: int
    duration_s: float
    completed: int
    failed: int
    steps_per_instance: int
    instances_per_s: float
    steps_per_s: float
    latency_ms: dict[str, float]
    overhead_per_step_ms: dict[str, float]
    target_rate: float | None = None
    processes: dict[str, dict[str, float]] = field(default_factory=dict[str, dict[str, float]])
    extra: dict[str, Any] = field(default_factory=dict[str, Any])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_result(
    *,
    system: str,
    shape: str,
    phase: str,
    clients: int,
    duration: float,
    latencies: Sequence[float],
    failed: int,
    steps: int,
    path: int | None = None,
    worker_seconds_per_step: float = 0.0,
    processes: Mapping[str, dict[str, float]] | None = None,
    target_rate: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ShapeResult:
    """Build the record. Engine overhead per step = (latency - worker time on the critical path) /
    steps on the critical path (``path``, default ``steps``)."""
    completed = len(latencies)
    hops = path or steps
    overhead = [max(0.0, (lat - hops * worker_seconds_per_step) / hops) for lat in latencies]
    return ShapeResult(
        system=system,
        shape=shape,
        phase=phase,
        clients=clients,
        duration_s=round(duration, 3),
        completed=completed,
        failed=failed,
        steps_per_instance=steps,
        instances_per_s=round(completed / duration, 1) if duration > 0 else 0.0,
        steps_per_s=round(completed * steps / duration, 1) if duration > 0 else 0.0,
        latency_ms=summarize_latencies(latencies),
        overhead_per_step_ms=summarize_latencies(overhead),
        target_rate=target_rate,
        processes=dict(processes or {}),
        extra=dict(extra or {}),
    )


class ProcessSampler:
    """CPU (cores used, averaged over the window) and RSS (max) of named process groups.

    A group is a root pid and, with ``children=True``, every descendant (Postgres' backends, a
    process's worker pool). CPU counts processes that started during the window from zero and keeps
    the last sample of those that ended. RSS of a group with children is the sum of their RSS
    (shared memory counted more than once; it is an upper bound), ``rss_mb_root`` is the root's own.
    """

    def __init__(self, groups: Mapping[str, tuple[int, bool]], *, interval: float = 0.5) -> None:
        self.groups = dict(groups)
        self.interval = interval
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._members: dict[str, set[int]] = {name: set() for name in self.groups}
        self._rss_max: dict[str, float] = dict.fromkeys(self.groups, 0.0)
        self._rss_root_max: dict[str, float] = dict.fromkeys(self.groups, 0.0)
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t1 = 0.0
        self._cpu0: Any = None
        self._autovacuum_samples = 0
        self._autovacuum_pids: dict[int, bool] = {}
        """Per process, once: is it a Postgres autovacuum worker (a process keeps its role)."""
        self.machine: dict[str, float] = {}
        """Set by :meth:`stop`: see the class docstring."""

    def _proc(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = self._procs[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return proc

    def _is_autovacuum_worker(self, proc: psutil.Process, /) -> bool:
        known = self._autovacuum_pids.get(proc.pid)
        if known is None:
            # Postgres names its processes in their command line ("postgres: autovacuum worker <db>").
            known = self._autovacuum_pids[proc.pid] = "autovacuum worker" in " ".join(proc.cmdline())
        return known

    def _sample(self, *, first: bool) -> None:
        autovacuum = False
        for name, (root, with_children) in self.groups.items():
            root_proc = self._proc(root)
            if root_proc is None:
                continue
            procs = [root_proc]
            if with_children:
                with contextlib.suppress(psutil.Error):
                    procs += root_proc.children(recursive=True)
            rss_total = 0.0
            for found in procs:
                pid = found.pid
                proc = self._proc(pid) or found
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        rss = proc.memory_info().rss / 2**20
                        if with_children and pid != root and self._is_autovacuum_worker(proc):
                            autovacuum = True
                except psutil.Error:
                    continue
                cpu = times.user + times.system
                if pid not in self._base:
                    self._base[pid] = cpu if first else 0.0
                self._last[pid] = cpu
                self._members[name].add(pid)
                rss_total += rss
                if pid == root:
                    self._rss_root_max[name] = max(self._rss_root_max[name], rss)
            self._rss_max[name] = max(self._rss_max[name], rss_total)
        if autovacuum and not first:
            self._autovacuum_samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(first=False)

    def start(self) -> ProcessSampler:
        self._t0 = time.perf_counter()
        self._cpu0 = psutil.cpu_times()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    @property
    def elapsed(self) -> float:
        """Seconds from :meth:`start` to :meth:`stop` (the window the cores are averaged over)."""
        return self._t1 - self._t0

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(first=False)
        self._t1 = time.perf_counter()
        wall = max(self._t1 - self._t0, 1e-9)
        self.machine = _machine_usage(self._cpu0, psutil.cpu_times(), wall)
        self.machine["autovacuum_s"] = round(self._autovacuum_samples * self.interval, 1)
        out: dict[str, dict[str, float]] = {}
        for name in self.groups:
            cpu = sum(self._last[p] - self._base[p] for p in self._members[name])
            out[name] = {
                "cpu_cores": round(cpu / wall, 3),
                "rss_mb_max": round(self._rss_max[name], 1),
                "rss_mb_root_max": round(self._rss_root_max[name], 1),
            }
        return out


def _machine_usage(before: Any, after: Any, wall: float, /) -> dict[str, float]:
    """Machine-wide cores busy and stolen between two ``psutil.cpu_times()`` (summed over CPUs)."""
    spent = {field: getattr(after, field) - getattr(before, field) for field in after._fields}
    idle = spent["idle"] + spent.get("iowait", 0.0)
    steal = spent.get("steal", 0.0)
    # Linux counts guest time inside user time already (psutil's cpu_percent leaves it out the same way).
    guests = spent.get("guest", 0.0) + spent.get("guest_nice", 0.0)
    busy = sum(spent.values()) - idle - steal - guests
    return {"busy_cores": round(busy / wall, 3), "steal_cores": round(steal / wall, 3)}


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when this process dies (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def cpu_probe_ms() -> float:
    """Milliseconds for a fixed pure-Python loop, best of three: how fast this machine is right now.
    On a shared VM it moves (155 to 314 ms on one day here), and every number of a run moves with it."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, load average, Python, the CPU probe (:func:`cpu_probe_ms`)."""
    import platform
    import sys

    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu_probe_ms": cpu_probe_ms(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


async def closed_loop(
    one: Callable[[], Awaitable[bool]], /, *, clients: int, duration: float
) -> tuple[list[float], int, list[str]]:
    """``clients`` concurrent clients each running ``one()`` (start an instance and wait for its end;
    True when it completed) back to back for ``duration`` seconds. Returns the latencies of the
    instances that completed inside the window, the failures, and the first few errors."""
    import asyncio

    latencies: list[float] = []
    errors: list[str] = []
    failed = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal failed
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                ok = await one()
            except Exception as exc:  # counted and reported; the client goes on
                failed += 1
                if len(errors) < 5:
                    errors.append(repr(exc)[:300])
                await asyncio.sleep(0.01)
                continue
            ended = time.perf_counter()
            if ended > deadline:
                return
            if ok:
                latencies.append(ended - started)
            else:
                failed += 1

    # The window is exact: at the deadline, clients still waiting are cancelled (their instances
    # would not count anyway), so a saturated system cannot stretch the phase.
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    await asyncio.wait(tasks, timeout=duration + 0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, failed, errors


@dataclass
class PacedRun(Generic[T]):
    """What :func:`paced` ran: the results of the calls that finished, in start order, and how long
    the starting took (longer than asked when the caller could not keep the pace)."""

    results: list[T]
    started: int
    elapsed: float


async def paced(
    one: Callable[[], Coroutine[Any, Any, T]],
    /,
    *,
    rate: float,
    duration: float,
    max_in_flight: int | None = None,
    timeout: float | None = None,
) -> PacedRun[T]:
    """Open loop: ``one()`` started ``rate`` times a second for ``duration`` seconds, evenly spaced,
    each in its own task (a slow one never delays the next start). With ``max_in_flight``, a start
    waits while that many calls run (the pace then slips, and ``elapsed`` shows it). With
    ``timeout``, calls still running that long after the last start are cancelled and left out of
    the results. A call's exception propagates (``one`` handles what it expects)."""
    import asyncio

    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max_in_flight) if max_in_flight is not None else None
    tasks: list[asyncio.Task[T]] = []

    async def call() -> T:
        try:
            return await one()
        finally:
            if slots is not None:
                slots.release()

    began = time.perf_counter()
    for index in range(int(rate * duration)):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots is not None:
            await slots.acquire()
        tasks.append(loop.create_task(call()))
    elapsed = time.perf_counter() - began
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    results = [task.result() for task in tasks if not task.cancelled()]
    return PacedRun(results, len(tasks), elapsed)


class RssTrack:
    """RSS of this process over time (for the memory-growth check of in-process engines)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, float]] = []

    def sample(self) -> None:
        self.points.append(
            (round(time.perf_counter() - self.t0, 2), round(self.proc.memory_info().rss / 2**20, 1))
        )
