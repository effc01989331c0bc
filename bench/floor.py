"""The I/O floor of a W1 instance on this machine: the suite's path with no engine in it.

What a W1 instance must do whatever the engine, with the same servers and durability as
``make bench`` (Postgres with fsync on, nats-server with its JetStream file store, the same
:mod:`bench.worker` processes), done by the least code that can do it:

1. the driver ``POST``\\ s to a service (uvicorn on uvloop and httptools, a bare ASGI app, no
   middleware);
2. the service commits a row (one statement) and publishes the job with a JetStream publish
   (acknowledged), then answers;
3. a worker pulls the job, publishes the result (acknowledged) and acks the job;
4. the service pulls the result, commits an update of the row, publishes the completion
   (acknowledged) and acks the result;
5. the driver receives the completion on a core NATS subscription.

No definition, no state, no outbox, no auth, no batching: one coroutine per message. Each hop is
also timed alone, at rest. The suite's W1 latency minus this floor is what the engine and the
platform add; a latency target below the floor cannot be met by any engine on this path here.

    uv run --frozen --with psutil --with aiohttp python -m bench.floor [--rates 5,165] [--duration 20]
"""

# ruff: noqa: T201, S603

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench.common import machine_info, percentiles
from wf_stack import NatsServer, PostgresServer
from wf_stack._os import descendants, free_port
from wf_worker.pull import PullStream

TENANT = "floor"
STREAMS = {"WF_JOBS": "wf.jobs.>", "WF_RESULTS": "wf.results.>", "WF_EVENTS": "wf.events.>"}


# -- the service: a bare ASGI app and a result consumer ---------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    pool = await asyncpg.create_pool(args.pg, min_size=4, max_size=10)
    nc = await nats.connect(args.nats)
    js = nc.jetstream()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:  # the request body (unused: the floor has no input to check)
            more = (await receive()).get("more_body", False)
        if scope["method"] != "POST":
            await _respond(send, 200, b"{}")
            return
        instance = str(uuid.uuid4())
        await pool.execute("INSERT INTO floor (id, state) VALUES ($1, 'running')", instance)
        job = json.dumps({"job_id": instance, "attempt": 1, "tenant": TENANT}).encode()
        await js.publish(f"wf.jobs.{TENANT}.noop", job, headers={"Nats-Msg-Id": f"job:{instance}"})
        await _respond(send, 201, json.dumps({"id": instance}).encode())

    async def on_result(message: Any) -> None:
        instance = json.loads(message.data)["job_id"]
        await pool.execute("UPDATE floor SET state = 'completed' WHERE id = $1", instance)
        await js.publish(
            f"wf.events.{TENANT}.completed",
            json.dumps({"instance_id": instance}).encode(),
            headers={"Nats-Msg-Id": f"{instance}:completed"},
        )
        await message.ack()

    async def results() -> None:
        stream = await PullStream(nc, stream="WF_RESULTS", durable="floor-service", batch=128).start()
        running: set[asyncio.Task[None]] = set()
        while True:
            for message in await stream.next_batch(128, timeout=1.0):
                task = asyncio.get_running_loop().create_task(on_result(message))
                running.add(task)
                task.add_done_callback(running.discard)

    consumer = asyncio.get_running_loop().create_task(results())
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="none",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    await uvicorn.Server(config).serve()
    consumer.cancel()
    await nc.close()
    await pool.close()


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


# -- the driver -----------------------------------------------------------------------------------


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


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group of processes and their children (Postgres backends)."""
    import psutil

    seconds: dict[str, float] = {}
    for name, roots in pids.items():
        total = 0.0
        group = [pid for root in roots for pid in (root, *descendants(root))]
        for pid in group:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        seconds[name] = total
    return seconds


async def _drive(
    args: argparse.Namespace, pg_url: str, nats_url: str, service_url: str, pids: dict[str, list[int]]
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
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:

        async def get() -> None:
            async with http.get(service_url) as response:
                await response.read()

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
            async with http.post(service_url, data=b"{}") as response:
                instance = (await response.json())["id"]
            posted = time.perf_counter()
            ended = early.pop(instance, None)
            if ended is None:
                future = waiting[instance] = asyncio.get_running_loop().create_future()
                ended = await asyncio.wait_for(future, 30)
            return (ended - started) * 1000, (posted - started) * 1000

        for rate in args.rates:
            for _ in range(20):  # warm-up
                await one()
            done: list[tuple[float, float]] = []
            tasks: list[asyncio.Task[None]] = []

            async def tracked(into: list[tuple[float, float]]) -> None:
                into.append(await one())

            cpu_before = _cpu_seconds(pids)
            start = time.perf_counter()
            count = int(rate * args.duration)
            for index in range(count):
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.get_running_loop().create_task(tracked(done)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
            cpu_after = _cpu_seconds(pids)
            chain = {
                "rate": rate,
                "completed": len(done),
                "cpu_cores": {
                    name: round((cpu_after[name] - cpu_before[name]) / elapsed, 3) for name in pids
                },
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
        ConsumerConfig(durable_name="floor-service", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
    )
    await nc.close()


def _run(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="wf-floor-"))
    pg = PostgresServer.start(fsync=True, settings={"shared_buffers": "256MB"})
    nats_server = NatsServer.start()
    children: list[subprocess.Popen[bytes]] = []
    try:
        pg_url = pg.url_for("postgres", driver="postgresql")
        asyncio.run(_prepare(pg_url, nats_server.url))
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (log_dir / "service.log").open("wb") as log:
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.floor",
                        "service",
                        "--pg",
                        pg_url,
                        "--nats",
                        nats_server.url,
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for index in range(args.workers):
            with (log_dir / f"worker-{index}.log").open("wb") as log:
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.worker",
                            "--nats",
                            nats_server.url,
                            "--tenant",
                            TENANT,
                            "--stats",
                            str(log_dir / f"worker-{index}.json"),
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        url = f"http://127.0.0.1:{port}/"
        asyncio.run(_wait_for(url))
        pids = {
            "service": [children[0].pid],
            "workers": [child.pid for child in children[1:]],
            "postgres": [pg.pid],
            "nats": [nats_server.pid],
        }
        report = asyncio.run(_drive(args, pg_url, nats_server.url, url, pids))
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
        nats_server.stop()
        pg.stop()
    report["machine"] = machine_info()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written: {args.out}")
    return 0


async def _wait_for(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the floor service at {url} did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "service"])
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 165.0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    parser.add_argument("--pg", help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "service":
        import uvloop

        uvloop.run(_serve(args))
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
