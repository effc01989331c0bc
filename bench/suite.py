"""The suite as in production, on this machine: Postgres (fsync on) and nats-server from wf_stack,
the definition registry, the orchestrator (and the task inbox for W4) as real processes
(``wf_stack.services.ServiceProcess``), N raw nats-py worker processes (:mod:`bench.worker`), and
the closed-loop load driver.

Completion is detected precisely: the driver subscribes (core NATS) to
``wf.events.<tenant>.instance.{completed,failed,cancelled}``, which the orchestrator's outbox relay
publishes when an instance ends; a client's latency is "POST /v1/instances sent" → "its
``instance.completed`` event received".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats

from bench.common import paced
from bench.histogram import HistogramSnapshot, read_histogram
from bench.lean_http import LeanHTTPClient
from bench.shapes import wire
from wf_platform.loop_lag import LOOP_LAG_METRIC
from wf_platform.testing import SigningKeys, bearer
from wf_stack import free_port
from wf_stack._os import die_with_parent
from wf_stack.nats import NatsServer
from wf_stack.postgres import PostgresServer
from wf_stack.services import ServiceProcess

__all__ = ["Stack", "SuiteDriver"]

REPO = Path(__file__).resolve().parent.parent
POSTGRES_SETTINGS = {
    "shared_buffers": "256MB",
    # The default (60 s) visits a database once a minute, so the dead rows of a whole maximum phase
    # (instances, attempts, timers, outbox rows) were vacuumed inside the half-load phase that
    # follows it: 1.9-4.1 s of autovacuum in that phase, 1.2-3.1 s with 10 s (bench/README,
    # "Thirteenth pass"). Small, frequent vacuums are what a queue-shaped table wants in production too.
    "autovacuum_naptime": "10s",
}
"""The bench's Postgres beyond wf_stack's defaults (fsync is on as well); the floor uses the same."""
ROLES = (
    "instances:read",
    "instances:write",
    "definitions:read",
    "definitions:write",
    "tasks:work",
    "tasks:admin",
)


@dataclass
class Stack:
    """Every process of the suite under test; :meth:`start` brings them up, :meth:`stop` down."""

    workers: int
    with_inbox: bool = False
    tenant: str = "bench"
    pythonpath: str | None = None
    """Prepended to the services' PYTHONPATH: measure a scratch copy of a service (before/after a fix)."""
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wf-bench-")))
    keys: SigningKeys = field(default_factory=SigningKeys.generate)
    pg: PostgresServer | None = None
    nats: NatsServer | None = None
    registry: ServiceProcess | None = None
    orchestrator: ServiceProcess | None = None
    inbox: ServiceProcess | None = None
    worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list[subprocess.Popen[bytes]])
    stats_files: list[Path] = field(default_factory=list[Path])

    def headers(
        self, *, sub: str = "bench", groups: tuple[str, ...] = (), roles: tuple[str, ...] = ROLES
    ) -> dict[str, str]:
        return bearer(self.keys.token(tenant=self.tenant, sub=sub, roles=roles, groups=groups, ttl=24 * 3600))

    def start(self) -> Stack:
        self.pg = PostgresServer.start(fsync=True, settings=POSTGRES_SETTINGS)
        self.nats = NatsServer.start()
        public = self.log_dir / "jwt-public.pem"
        public.write_text(self.keys.public_pem)
        common = {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "PYTHONUNBUFFERED": "1",
        }
        if self.pythonpath:
            common["PYTHONPATH"] = self.pythonpath

        def env(prefix: str, database: str, port: int, **more: str) -> dict[str, str]:
            assert self.pg is not None and self.nats is not None
            values = {
                "DATABASE_URL": self.pg.url_for(database, driver="postgresql+asyncpg"),
                "NATS_URL": self.nats.url,
                "JWT_PUBLIC_KEY_FILE": str(public),
                "PORT": str(port),
                "LOG_LEVEL": "INFO",
                **more,
            }
            return common | {f"{prefix}_{k}": v for k, v in values.items()}

        registry_port, orchestrator_port = free_port(), free_port()
        self.registry = ServiceProcess.start(
            "definition_registry",
            env=env("DEFINITION_REGISTRY", "wf_registry", registry_port),
            port=registry_port,
            log_dir=self.log_dir,
        )
        self.orchestrator = ServiceProcess.start(
            "orchestrator",
            env=env(
                "ORCHESTRATOR",
                "wf_orchestrator",
                orchestrator_port,
                REGISTRY_URL=self.registry.url,
            ),
            port=orchestrator_port,
            log_dir=self.log_dir,
        )
        if self.with_inbox:
            inbox_port = free_port()
            self.inbox = ServiceProcess.start(
                "task_inbox",
                env=env("TASK_INBOX", "wf_inbox", inbox_port, ORCHESTRATOR_URL=self.orchestrator.url),
                port=inbox_port,
                log_dir=self.log_dir,
            )
        self.start_workers()
        return self

    def start_workers(self) -> None:
        assert self.nats is not None
        for index in range(self.workers):
            stats = self.log_dir / f"worker-{index}.json"
            stats.write_text('{"jobs": 0, "busy_s": 0.0}')
            log = (self.log_dir / f"worker-{index}.log").open("ab")
            proc = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                [
                    *die_with_parent("KILL"),
                    sys.executable,
                    "-m",
                    "bench.worker",
                    "--nats",
                    self.nats.url,
                    "--tenant",
                    self.tenant,
                    "--stats",
                    str(stats),
                    "--name",
                    f"bench-worker-{index}",
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            self.worker_procs.append(proc)
            self.stats_files.append(stats)

    def worker_stats(self) -> tuple[int, float]:
        """(jobs handled, seconds busy), summed over the workers."""
        jobs, busy = 0, 0.0
        for path in self.stats_files:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                jobs += int(data["jobs"])
                busy += float(data["busy_s"])
        return jobs, busy

    def process_groups(self) -> dict[str, tuple[int, bool]]:
        """Named pids for the sampler (Postgres with its backends)."""
        groups: dict[str, tuple[int, bool]] = {}
        if self.orchestrator is not None:
            groups["orchestrator"] = (self.orchestrator.pid, False)
        if self.registry is not None:
            groups["registry"] = (self.registry.pid, False)
        if self.inbox is not None:
            groups["inbox"] = (self.inbox.pid, False)
        for index, proc in enumerate(self.worker_procs):
            groups[f"worker-{index}"] = (proc.pid, False)
        if self.pg is not None:
            groups["postgres"] = (self.pg.pid, True)
        if self.nats is not None:
            groups["nats"] = (self.nats.pid, False)
        groups["driver"] = (os.getpid(), False)
        return groups

    def stop(self) -> None:
        for proc in self.worker_procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.worker_procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in (self.inbox, self.orchestrator, self.registry):
            if service is not None:
                service.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            yield self.start()
        finally:
            self.stop()

    def loop_lag(self) -> HistogramSnapshot:
        """The orchestrator's ``wf_event_loop_lag_seconds`` histogram now (from ``/metrics``)."""
        assert self.orchestrator is not None
        text = httpx.get(f"{self.orchestrator.url}/metrics", timeout=10).text
        return read_histogram(text, LOOP_LAG_METRIC)

    def register(self, shapes: list[str]) -> None:
        assert self.registry is not None
        for shape in shapes:
            response = httpx.post(
                f"{self.registry.url}/v1/definitions", json=wire(shape), headers=self.headers(), timeout=30
            )
            if response.status_code not in (200, 201):
                raise RuntimeError(f"registering {shape}: {response.status_code} {response.text}")


class _Event(msgspec.Struct):
    instance_id: str


@dataclass
class PhaseOutcome:
    latencies: list[float]
    failed: int
    duration: float
    errors: list[str]


class SuiteDriver:
    """Closed-loop (and paced) load on the orchestrator's HTTP API, completion from NATS events."""

    def __init__(self, stack: Stack, *, connections: int) -> None:
        assert stack.orchestrator is not None and stack.nats is not None
        self.stack = stack
        self.headers = stack.headers()
        self.connections = connections
        self._done: dict[str, tuple[float, str]] = {}
        self._waiters: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self._decoder = msgspec.json.Decoder(_Event)
        self._running: set[str] = set()
        """Instances started and not yet ended (cancelled clients leave some behind)."""
        # The driver shares the two cores with the suite: every microsecond it spends is taken from
        # the system it measures. Its CPU per W1 instance at 498/s (a start, its end event, the
        # pacing), on uvloop: 0.22 ms with LeanHTTPClient, 0.38 ms with aiohttp (httpx costs ~3x aiohttp).
        self.http: LeanHTTPClient | None = None
        self._start_requests: dict[str, bytes] = {}
        self.nc: Any = None

    async def __aenter__(self) -> SuiteDriver:
        assert self.stack.orchestrator is not None and self.stack.nats is not None
        self.http = LeanHTTPClient(self.stack.orchestrator.url, connections=self.connections, timeout=60)
        self.nc = await nats.connect(self.stack.nats.url)
        # Only the ends: a subscription to every instance event would hand the driver (and
        # nats-server) a ``started`` event per instance to throw away.
        for end in ("completed", "failed", "cancelled"):
            await self.nc.subscribe(f"wf.events.{self.stack.tenant}.instance.{end}", cb=self._on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        if self.nc is not None:
            await self.nc.close()

    async def _on_event(self, message: Any) -> None:
        at = time.perf_counter()
        status = message.subject.rsplit(".", 1)[-1]
        instance_id = self._decoder.decode(message.data).instance_id
        self._running.discard(instance_id)
        waiter = self._waiters.pop(instance_id, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result((at, status))
        else:
            self._done[instance_id] = (at, status)

    async def start(self, definition: str) -> str:
        """``POST /v1/instances``; the new instance's id."""
        assert self.http is not None
        request = self._start_requests.get(definition)
        if request is None:
            request = self._start_requests[definition] = self.http.request_bytes(
                "POST",
                "/v1/instances",
                headers={**self.headers, "Content-Type": "application/json"},
                body=msgspec.json.encode({"definition": definition, "input": {}}),
            )
        response = await self.http.send(request)
        if response.status != 201:
            raise RuntimeError(f"start: {response.status} {response.body[:200]!r}")
        return str(msgspec.json.decode(response.body)["id"])

    async def one(self, definition: str) -> tuple[float, str]:
        """Start an instance and wait for its end: (latency seconds, final status)."""
        assert self.http is not None
        started = time.perf_counter()
        instance_id = await self.start(definition)
        early = self._done.pop(instance_id, None)
        if early is not None:
            return early[0] - started, early[1]
        self._running.add(instance_id)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[instance_id] = waiter
        try:
            at, status = await asyncio.wait_for(waiter, timeout=120)
        finally:
            self._waiters.pop(instance_id, None)
        return at - started, status

    async def drain(self, *, timeout: float = 120.0) -> int:
        """Wait (bounded) until every instance started so far has ended, so that the next phase
        starts on an idle system; returns how many were still running at the timeout."""
        deadline = time.perf_counter() + timeout
        while self._running and time.perf_counter() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.1)
        self._done.clear()
        return len(self._running)

    async def closed_loop(self, definition: str, *, clients: int, duration: float) -> PhaseOutcome:
        """``clients`` clients, each: start, wait for the end, again; for ``duration`` seconds.
        Instances that end after the window are not counted (nor waited for beyond 120 s)."""
        latencies: list[float] = []
        errors: list[str] = []
        failed = 0
        began = time.perf_counter()
        deadline = began + duration

        async def client() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                try:
                    latency, status = await self.one(definition)
                except Exception as exc:  # counted, reported, and the client goes on
                    errors.append(repr(exc)[:300])
                    failed += 1
                    await asyncio.sleep(0.05)
                    continue
                if time.perf_counter() > deadline:
                    return
                if status == "completed":
                    latencies.append(latency)
                else:
                    failed += 1

        # Exact window: clients still waiting at the deadline are cancelled (not counted).
        tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
        await asyncio.wait(tasks, timeout=duration + 0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return PhaseOutcome(latencies, failed, duration, errors[:5])

    async def paced(
        self, definition: str, *, rate: float, duration: float, max_in_flight: int = 2000
    ) -> PhaseOutcome:
        """Open loop: start ``rate`` instances a second, evenly spaced, each waited for in its own
        task (:func:`bench.common.paced`); stragglers are waited for at most ``max(10, duration)`` s."""
        latencies: list[float] = []
        errors: list[str] = []
        failed = 0

        async def tracked() -> None:
            nonlocal failed
            try:
                latency, status = await self.one(definition)
            except Exception as exc:
                errors.append(repr(exc)[:300])
                failed += 1
            else:
                if status == "completed":
                    latencies.append(latency)
                else:
                    failed += 1

        run = await paced(
            tracked, rate=rate, duration=duration, max_in_flight=max_in_flight, timeout=max(10.0, duration)
        )
        return PhaseOutcome(latencies, failed, max(run.elapsed, duration), errors[:5])
