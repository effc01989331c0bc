"""Many tenants: what each tenant costs the services in memory and database connections (issue 8:
"1,000 tenants with a few definitions each add under 1 MB per tenant to a service and no dedicated
database connections (pooled)").

On a fresh suite (:class:`bench.suite.Stack`: Postgres with fsync, nats-server, the registry, the
orchestrator and the task inbox as real processes):

1. Warm-up: the bench tenant goes through the same flow as every measured tenant (below), so that
   first-use costs (imports, compiled statements, Alembic's scripts) are paid before the baseline.
   Then each service's RSS (the process itself, psutil) and the Postgres client connections per
   service database (``pg_stat_activity``) are recorded.
2. N tenants (``--tenants``, 1,000), ``--concurrency`` of them at a time, each with its own JWT:
   three definitions registered over the registry's HTTP API (one machine step; a human step then a
   machine step; an exclusive gateway choosing between two machine steps), one instance of the
   human-first definition started over the orchestrator's HTTP API (the orchestrator provisions the
   tenant, asks the registry for the definition and caches it), and the inbox polled over HTTP
   until that instance's human task is there (the inbox provisions the tenant from the message and
   again serves it). Every service thus touches every tenant, on its database and in its caches.
   The tenants go in ``--checkpoints`` equal batches; after each, RSS is sampled again (the curve).
3. RSS again after the pipeline is idle: (after - before) / N is the MB per tenant read against the
   1 MB target; ``marginal_mb_per_tenant`` is the slope over the second half of the curve (free of
   one-time costs). Connections are sampled every 0.5 s throughout: the peak per database must
   stay within the service's pool (``DB_POOL_SIZE``, 10 per process).

    uv run --frozen --with psutil --with aiohttp python -m bench.tenants --tenants 1000 [--out FILE]

``make bench`` runs it too (``python -m bench.run --tenants N``; ``--tenants 0`` skips it).
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # ``python bench/tenants.py``: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg
import psutil

__all__ = ["DEFAULT_TENANTS", "TARGET_MB_PER_TENANT", "evaluate", "markdown", "tenants_benchmark"]

DEFAULT_TENANTS = 1000
TARGET_MB_PER_TENANT = 1.0
DATABASES = {"registry": "wf_registry", "orchestrator": "wf_orchestrator", "inbox": "wf_inbox"}
"""Each service's own database (what ``Stack`` configures)."""
ROLES = ("definitions:read", "definitions:write", "instances:read", "instances:write", "tasks:work")
GROUP = "reviewers"
HUMAN_FIRST = "mt_review"
STEP_TYPE = "bench.noop"


def definitions() -> list[dict[str, Any]]:
    """The three small definitions every tenant registers (wire format)."""
    machine = {"type": "machine", "step_type": STEP_TYPE}
    review = {
        "type": "human",
        "title": "Review",
        "candidate_groups": [GROUP],
        "form_schema": {
            "type": "object",
            "properties": {"approved": {"type": "boolean"}},
            "required": ["approved"],
        },
    }
    return [
        {"name": "mt_machine", "version": "1.0.0", "steps": {"work": machine}, "edges": []},
        {
            "name": HUMAN_FIRST,
            "version": "1.0.0",
            "steps": {"review": review, "after": machine},
            "edges": [{"source": "review", "target": "after"}],
        },
        {
            "name": "mt_route",
            "version": "1.0.0",
            "steps": {"route": {"type": "exclusive_gateway"}, "big": machine, "small": machine},
            "edges": [
                {"source": "route", "target": "big", "condition": "amount > 100"},
                {"source": "route", "target": "small", "default": True},
            ],
        },
    ]


# ---------------------------------------------------------------------------- measurements


def service_pids(stack: Any) -> dict[str, int]:
    pids = {"registry": stack.registry, "orchestrator": stack.orchestrator, "inbox": stack.inbox}
    return {name: service.pid for name, service in pids.items() if service is not None}


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """Each process's own RSS in MB."""
    return {name: round(psutil.Process(pid).memory_info().rss / 2**20, 1) for name, pid in pids.items()}


def postgres_memory_mb(stack: Any) -> dict[str, float]:
    """Postgres' processes summed: ``pss`` (shared buffers split between the processes that touched
    them, so the sum is the server's real footprint; an RSS sum would count them once per backend)
    and ``uss`` (memory private to the processes: the backends' catalog caches, prepared statements
    and work memory)."""
    root = psutil.Process(stack.pg.pid)
    pss = uss = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            pss += info.pss
            uss += info.uss
    return {"pss": round(pss / 2**20, 1), "uss": round(uss / 2**20, 1)}


async def settled_rss(pids: dict[str, int], *, seconds: float = 3.0) -> dict[str, float]:
    """RSS once the services are idle: the median of samples over ``seconds`` (after a pause, so that
    the outbox relays and consumers have finished what the last requests caused)."""
    await asyncio.sleep(seconds)
    samples: list[dict[str, float]] = []
    for _ in range(5):
        samples.append(rss_mb(pids))
        await asyncio.sleep(0.2)
    return {name: round(statistics.median(s[name] for s in samples), 1) for name in pids}


CONNECTIONS_SQL = """
    SELECT datname, count(*) AS n FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND datname = ANY($1::text[])
    GROUP BY datname
"""


class ConnectionWatch:
    """Postgres client connections per service database, now and at peak (sampled every 0.5 s)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self.peak: dict[str, int] = dict.fromkeys(DATABASES, 0)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ConnectionWatch:
        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self.conn.close()

    async def now(self) -> dict[str, int]:
        rows = await self.conn.fetch(CONNECTIONS_SQL, list(DATABASES.values()))
        by_db = {row["datname"]: int(row["n"]) for row in rows}
        counts = {service: by_db.get(db, 0) for service, db in DATABASES.items()}
        for service, count in counts.items():
            self.peak[service] = max(self.peak[service], count)
        return counts

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.now()
                await asyncio.sleep(0.5)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# ---------------------------------------------------------------------------- the per-tenant flow


@dataclass
class TenantFlow:
    """The HTTP side: one session per service, a token per tenant."""

    stack: Any
    sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict[str, aiohttp.ClientSession])
    timings: dict[str, list[float]] = field(
        default_factory=lambda: {"register": [], "start": [], "task": [], "tenant": []}
    )
    errors: list[str] = field(default_factory=list[str])
    failed: int = 0
    retries: int = 0

    @contextlib.asynccontextmanager
    async def open(self, *, connections: int) -> Any:
        stack = self.stack
        for name, service in (
            ("registry", stack.registry),
            ("orchestrator", stack.orchestrator),
            ("inbox", stack.inbox),
        ):
            self.sessions[name] = aiohttp.ClientSession(
                base_url=service.url,
                # Below uvicorn's 5 s keep-alive, so that the client drops an idle connection first.
                connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=3),
                timeout=aiohttp.ClientTimeout(total=120),
            )
        try:
            yield self
        finally:
            for session in self.sessions.values():
                await session.close()

    def headers(self, tenant: str) -> dict[str, str]:
        token = self.stack.keys.token(
            tenant=tenant, sub="mt-user", roles=ROLES, groups=(GROUP,), ttl=24 * 3600
        )
        return {"Authorization": f"Bearer {token}"}

    async def _json(self, service: str, method: str, path: str, *, ok: tuple[int, ...], **kw: Any) -> Any:
        for attempt in range(3):
            try:
                async with self.sessions[service].request(method, path, **kw) as response:
                    body = await response.read()
                    if response.status not in ok:
                        raise RuntimeError(f"{service} {method} {path}: {response.status} {body[:300]!r}")
                return json.loads(body)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A kept-alive connection the server closed as it was reused: the request never
                # reached the app. Every request here is safe to repeat (registrations are
                # idempotent, the start carries an Idempotency-Key).
                if attempt == 2:
                    raise
                self.retries += 1
        raise AssertionError("unreachable")

    async def tenant(self, tenant: str, *, task_timeout: float = 120.0) -> None:
        """Register the definitions, start the human-first one, wait for its task in the inbox."""
        headers = self.headers(tenant)
        began = time.perf_counter()
        for definition in definitions():
            await self._json(
                "registry", "POST", "/v1/definitions", ok=(200, 201), json=definition, headers=headers
            )
        registered = time.perf_counter()
        body = {"definition": HUMAN_FIRST, "input": {"amount": 250}}
        start_headers = {**headers, "Idempotency-Key": f"mt-start-{tenant}"}
        instance = await self._json(
            "orchestrator", "POST", "/v1/instances", ok=(201,), json=body, headers=start_headers
        )
        started = time.perf_counter()
        deadline = started + task_timeout
        while True:
            page = await self._json(
                "inbox",
                "GET",
                "/v1/tasks",
                ok=(200,),
                params={"instance_id": instance["id"]},
                headers=headers,
            )
            if page["items"]:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{tenant}: no task in the inbox after {task_timeout:.0f} s")
            await asyncio.sleep(0.05)
        ended = time.perf_counter()
        self.timings["register"].append(registered - began)
        self.timings["start"].append(started - registered)
        self.timings["task"].append(ended - started)
        self.timings["tenant"].append(ended - began)

    async def many(self, tenants: list[str], *, concurrency: int) -> None:
        """Every tenant's flow, ``concurrency`` at a time; failures are counted, not raised."""
        gate = asyncio.Semaphore(concurrency)

        async def one(tenant: str) -> None:
            async with gate:
                try:
                    await self.tenant(tenant)
                except Exception as exc:  # counted and reported; the others go on
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(repr(exc)[:300])

        await asyncio.gather(*(one(t) for t in tenants))


def tenant_ids(count: int, /) -> list[str]:
    return [f"mt_{index:05d}" for index in range(count)]


def batches(items: list[str], parts: int, /) -> Iterator[list[str]]:
    parts = max(1, min(parts, len(items)))
    for index in range(parts):
        chunk = items[len(items) * index // parts : len(items) * (index + 1) // parts]
        if chunk:
            yield chunk


async def measure(
    stack: Any, *, tenants: int, concurrency: int, checkpoints: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Warm-up, baseline, N tenants in batches, the end state (see the module docstring)."""
    from wf_platform.settings import ServiceSettings

    pids = service_pids(stack)
    pool_size = ServiceSettings.__dataclass_fields__["db_pool_size"].default
    assert isinstance(pool_size, int)
    flow = TenantFlow(stack)
    async with ConnectionWatch(stack.pg.url_for("postgres")) as watch, flow.open(connections=concurrency * 2):
        await flow.tenant(stack.tenant)  # warm-up: the bench tenant, the same flow
        await flow.many(["warmup_a", "warmup_b"], concurrency=2)  # ... and the first concurrent ones
        flow.timings = {key: [] for key in flow.timings}
        before = await settled_rss(pids)
        pg_before = postgres_memory_mb(stack)
        connections_before = await watch.now()
        watch.peak = dict.fromkeys(DATABASES, 0)
        log(f"tenants: baseline RSS {before} MB, connections {connections_before}")
        curve: list[dict[str, Any]] = [{"tenants": 0, "rss_mb": before}]
        watch.start()
        began = time.perf_counter()
        provisioning = 0.0
        done = 0
        for chunk in batches(tenant_ids(tenants), checkpoints):
            t0 = time.perf_counter()
            await flow.many(chunk, concurrency=concurrency)
            provisioning += time.perf_counter() - t0
            done += len(chunk)
            point = rss_mb(pids)
            curve.append({"tenants": done, "rss_mb": point, "seconds": round(time.perf_counter() - began, 1)})
            log(f"tenants: {done}/{tenants} in {time.perf_counter() - began:.0f} s, RSS {point} MB, "
                f"peak connections {watch.peak}")  # fmt: skip
        await watch.stop()
        after = await settled_rss(pids)
        pg_after = postgres_memory_mb(stack)
        connections_after = await watch.now()
        peak = dict(watch.peak)
    curve[-1]["rss_mb"] = after
    ok = tenants - flow.failed
    services: dict[str, Any] = {}
    for name in pids:
        half = min(curve, key=lambda p: abs(p["tenants"] - tenants / 2))
        span = curve[-1]["tenants"] - half["tenants"]
        marginal = (after[name] - half["rss_mb"][name]) / span if span else None
        services[name] = {
            "rss_mb_before": before[name],
            "rss_mb_after": after[name],
            "mb_per_tenant": round((after[name] - before[name]) / tenants, 4) if tenants else None,
            "marginal_mb_per_tenant": round(marginal, 4) if marginal is not None else None,
            "connections_before": connections_before[name],
            "connections_after": connections_after[name],
            "connections_peak": peak[name],
            "pool_size": pool_size,
        }
    timings = {
        key: {k: round(v * 1000, 1) for k, v in _stats(values).items()}
        for key, values in flow.timings.items()
    }
    return {
        "tenants": tenants,
        "tenants_ok": ok,
        "failed": flow.failed,
        "errors": flow.errors,
        "http_retries": flow.retries,
        "definitions_per_tenant": len(definitions()),
        "instances_per_tenant": 1,
        "concurrency": concurrency,
        "provisioning_s": round(provisioning, 1),
        "tenants_per_s": round(ok / provisioning, 2) if provisioning else 0.0,
        "per_tenant_ms": timings,
        "services": services,
        "postgres_mb_before": pg_before,
        "postgres_mb_after": pg_after,
        "curve": curve,
    }


def _stats(values: list[float]) -> dict[str, float]:
    from bench.common import percentiles

    return percentiles(values) if values else {}


def tenants_benchmark(
    *,
    tenants: int = DEFAULT_TENANTS,
    concurrency: int = 16,
    checkpoints: int = 10,
    pythonpath: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start a fresh suite (with the inbox, no workers), measure, stop it; the JSON-able report."""
    from bench.suite import Stack

    stack = Stack(workers=0, with_inbox=True, pythonpath=pythonpath)
    log(f"tenants: starting the suite (Postgres fsync=on, NATS, the three services) for {tenants} tenants")
    with stack.running():
        report = asyncio.run(
            measure(stack, tenants=tenants, concurrency=concurrency, checkpoints=checkpoints, log=log)
        )
        report["log_dir"] = str(stack.log_dir)
    return report


# ---------------------------------------------------------------------------- targets and output


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: under 1 MB per tenant per service, connections within the pool."""
    checks: list[dict[str, Any]] = []
    n = report["tenants"]
    for name, s in report["services"].items():
        per_tenant = s["mb_per_tenant"]
        checks.append(
            {
                "target": f"{name} RSS per tenant < {TARGET_MB_PER_TENANT:g} MB",
                "value": per_tenant,
                "met": report["failed"] == 0 and per_tenant is not None and per_tenant < TARGET_MB_PER_TENANT,
                "detail": f"{n} tenants: {s['rss_mb_before']} -> {s['rss_mb_after']} MB, "
                f"marginal {s['marginal_mb_per_tenant']} MB",
            }
        )
        pool = s["pool_size"]
        checks.append(
            {
                "target": f"{name} DB connections pooled (peak <= pool {pool})",
                "value": s["connections_peak"],
                "met": s["connections_peak"] <= pool and s["connections_after"] <= pool,
                "detail": f"{n} tenants: {s['connections_before']} before, {s['connections_after']} after",
            }
        )
    return checks


def markdown(report: dict[str, Any]) -> str:
    """A short paragraph and table for bench/README.md's results section."""
    p50 = report["per_tenant_ms"]["tenant"].get("p50")
    pg0, pg1 = report["postgres_mb_before"], report["postgres_mb_after"]
    lines = [
        f"Tenants: {report['tenants']:,} tenants ({report['tenants_ok']:,} ok), each with "
        f"{report['definitions_per_tenant']} definitions registered, one instance started and its human "
        f"task seen in the inbox, {report['concurrency']} tenants at a time: provisioning took "
        f"{report['provisioning_s']} s ({report['tenants_per_s']} tenants/s, p50 {p50} ms per tenant). "
        f"Postgres, all its processes: PSS {pg0['pss']} → {pg1['pss']} MB, private (USS) "
        f"{pg0['uss']} → {pg1['uss']} MB.",
        "",
        "| service | RSS before MB | RSS after MB | MB per tenant | marginal MB per tenant "
        "| DB connections before / peak / after (pool) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, s in report["services"].items():
        lines.append(
            f"| {name} | {s['rss_mb_before']} | {s['rss_mb_after']} | {s['mb_per_tenant']} | "
            f"{s['marginal_mb_per_tenant']} | {s['connections_before']} / {s['connections_peak']} / "
            f"{s['connections_after']} ({s['pool_size']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tenants",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help="tenants to provision (N)")
    parser.add_argument("--concurrency", type=int, default=16, help="tenants provisioned at a time")
    parser.add_argument("--checkpoints", type=int, default=10, help="batches, RSS sampled after each")
    parser.add_argument("--service-pythonpath", metavar="PATHS", help="prepend to the services' PYTHONPATH")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    report = tenants_benchmark(
        tenants=args.tenants,
        concurrency=args.concurrency,
        checkpoints=args.checkpoints,
        pythonpath=args.service_pythonpath,
        log=log,
    )
    report["targets"] = evaluate(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print()
    for target in report["targets"]:
        mark = "MET   " if target["met"] else "MISSED"
        print(f"{mark} {target['target']}: {target['value']} {target['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
