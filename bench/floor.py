"""The I/O floor of a W1 instance on this machine: the suite's path with no engine in it.

What a W1 instance must do whatever the engine, with the same servers and durability as
``make bench`` (Postgres with fsync on, nats-server with its JetStream file store, the same
:mod:`bench.worker` processes), done by the least code that can do it:

1. the driver ``POST``\\ s to a service (:mod:`bench.floor_service`: uvicorn on uvloop and
   httptools, a bare ASGI app, no middleware);
2. the service commits a row (one statement) and publishes the job with a JetStream publish
   (acknowledged), then answers;
3. a worker pulls the job, publishes the result (acknowledged) and acks the job;
4. the service pulls the result, commits an update of the row, publishes the completion
   (acknowledged) and acks the result;
5. the driver receives the completion on a core NATS subscription.

No definition, no state, no outbox, no auth, no batching: one coroutine per message. Each hop is
also timed alone, at rest. The suite's W1 latency minus this floor is what the engine and the
platform add; a latency target below the floor cannot be met by any engine on this path here.

    uv run --frozen --with psutil python -m bench.floor [--rates 5,165] [--duration 20]
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench.common import ProcessSampler, machine_info, paced, percentiles
from bench.floor_service import RESULTS_DURABLE, TENANT
from bench.lean_http import LeanHTTPClient
from bench.suite import POSTGRES_SETTINGS, Stack
from wf_stack import NatsServer, PostgresServer, free_port
from wf_stack.services import ServiceProcess

STREAMS = {"WF_JOBS": "wf.jobs.>", "WF_RESULTS": "wf.results.>", "WF_EVENTS": "wf.events.>"}


async def _hop(label: str, call: Any, *, count: int = 100, gap: float = 0.1) -> dict[str, Any]:
    """One hop timed alone, ``count`` times, ``gap`` seconds apart (at rest)."""
    times: list[float] = []
    for _ in range(count):
        await asyncio.sleep(gap)
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    result = {"hop": label, **percentiles(times)}
    print(f"  {label:48s} p50 {result['p50']:6.2f}  p95 {result['p95']:6.2f} ms")
    return result


def _cores(sampled: dict[str, dict[str, float]]) -> dict[str, float]:
    """The sampler's CPU cores per group, the workers summed."""
    cores = {"service": 0.0, "workers": 0.0, "postgres": 0.0, "nats": 0.0}
    for name, numbers in sampled.items():
        group = "workers" if name.startswith("worker-") else name
        if group in cores:
            cores[group] = round(cores[group] + numbers["cpu_cores"], 3)
    return cores


async def _drive(
    args: argparse.Namespace,
    pg_url: str,
    nats_url: str,
    service_url: str,
    groups: dict[str, tuple[int, bool]],
) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    conn = await asyncpg.connect(pg_url)
    waiting: dict[str, asyncio.Future[float]] = {}
    early: dict[str, float] = {}  # completions that arrived before their POST's response was read

    async def on_event(message: Any) -> None:
        instance = json.loads(message.data)["instance_id"]
        future = waiting.pop(instance, None)
        if future is None:
            early[instance] = time.perf_counter()
        elif not future.done():
            future.set_result(time.perf_counter())

    await nc.subscribe(f"wf.events.{TENANT}.completed", cb=on_event)
    report: dict[str, Any] = {"hops": [], "chain": []}
    http = LeanHTTPClient(service_url, connections=256)  # the suite's driver's client
    get_request = http.request_bytes("GET", "/", headers={})
    post_request = http.request_bytes("POST", "/", headers={}, body=b"{}")
    try:

        async def get() -> None:
            await http.send(get_request)

        print("hops, one at a time at rest:")
        report["hops"] = [
            await _hop("HTTP GET to a bare ASGI app (uvicorn)", get),
            await _hop("Postgres SELECT 1", lambda: conn.fetchval("SELECT 1")),
            await _hop(
                "Postgres INSERT, committed (fsync)",
                lambda: conn.execute("INSERT INTO floor (id, state) VALUES ($1, 'x')", str(uuid.uuid4())),
            ),
            await _hop("JetStream publish, acknowledged", lambda: js.publish("wf.events.floor.probe", b"{}")),
            await _hop("core NATS round trip (flush)", nc.flush),
        ]

        async def one() -> tuple[float, float]:
            started = time.perf_counter()
            instance = json.loads((await http.send(post_request)).body)["id"]
            posted = time.perf_counter()
            ended = early.pop(instance, None)
            if ended is None:
                future = waiting[instance] = asyncio.get_running_loop().create_future()
                ended = await asyncio.wait_for(future, 30)
            return (ended - started) * 1000, (posted - started) * 1000

        for rate in args.rates:
            for _ in range(20):  # warm-up
                await one()
            sampler = ProcessSampler(groups).start()
            done = (await paced(one, rate=rate, duration=args.duration)).results
            chain = {
                "rate": rate,
                "completed": len(done),
                "cpu_cores": _cores(sampler.stop()),
                "latency_ms": percentiles([d[0] for d in done]),
                "post_ms": percentiles([d[1] for d in done]),
            }
            report["chain"].append(chain)
            lat, post = chain["latency_ms"], chain["post_ms"]
            print(
                f"W1 chain at {rate:g}/s: end to end p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} "
                f"p99 {lat['p99']:.1f} ms; POST p50 {post['p50']:.1f} ms; CPU cores "
                + ", ".join(f"{name} {cores}" for name, cores in chain["cpu_cores"].items())
            )
    finally:
        await http.close()
    await conn.close()
    await nc.close()
    return report


async def _prepare(pg_url: str, nats_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS floor (id uuid PRIMARY KEY, state text NOT NULL)")
    await conn.close()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for name, subject in STREAMS.items():
        await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE))
    await js.add_consumer(
        "WF_RESULTS",
        ConsumerConfig(durable_name=RESULTS_DURABLE, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
    )
    await nc.close()


def _run(args: argparse.Namespace) -> int:
    # The suite's stack object, with only its servers and its bench workers: no suite services.
    stack = Stack(workers=args.workers, tenant=TENANT)
    stack.pg = PostgresServer.start(fsync=True, settings=POSTGRES_SETTINGS)
    stack.nats = NatsServer.start()
    service: ServiceProcess | None = None
    try:
        pg_url = stack.pg.url_for("postgres", driver="postgresql")
        asyncio.run(_prepare(pg_url, stack.nats.url))
        stack.start_workers()
        port = free_port()
        service = ServiceProcess.start(
            "bench.floor_service",
            env={"FLOOR_PORT": str(port), "FLOOR_PG_URL": pg_url, "FLOOR_NATS_URL": stack.nats.url},
            port=port,
            log_dir=stack.log_dir,
        )
        groups = {**stack.process_groups(), "service": (service.pid, False)}
        report = uvloop.run(
            _drive(args, pg_url, stack.nats.url, service.url, groups)
        )  # as the suite's driver
    finally:
        if service is not None:
            service.stop()
        stack.stop()
    report["machine"] = machine_info()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 165.0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
