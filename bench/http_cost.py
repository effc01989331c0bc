"""CPU per HTTP request: the orchestrator's routes against a bare ASGI app on the same server stack.

Paced ``GET`` requests (``--rate`` per second for ``--duration`` seconds, after 50 warm-up requests);
the server process's CPU time (user + system, psutil) divided by the requests. The bare app is the
floor of any Python HTTP service here (uvicorn on uvloop and httptools, no access log); the
orchestrator's ``/health/live`` adds Litestar and the middlewares, a ``401`` adds the auth
middleware's refusal, and ``GET /v1/instances`` adds a verified token, the role guard and a query.

    uv run --frozen --with psutil --with aiohttp python -m bench.http_cost [--rate 300] [--duration 10]
"""

# ruff: noqa: T201, S603

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp
import psutil

from bench.suite import Stack
from wf_stack._os import free_port

_BARE_APP = """
import uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})

uvicorn.run(app, host="127.0.0.1", port=%d, log_level="warning", access_log=False, loop="uvloop",
            http="httptools")
"""


async def cpu_per_request(
    url: str, pid: int, *, rate: float, duration: float, headers: dict[str, str] | None = None
) -> tuple[float, dict[int, int]]:
    """The process's CPU milliseconds per request, and the statuses seen."""
    process = psutil.Process(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one() -> int:
            async with session.get(url, headers=headers) as response:
                await response.read()
                return response.status

        for _ in range(50):
            await one()
        before = sum(process.cpu_times()[:2])
        start = time.perf_counter()
        count = int(rate * duration)
        tasks: list[asyncio.Future[int]] = []
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        statuses = await asyncio.gather(*tasks)
        after = sum(process.cpu_times()[:2])
    return (after - before) / count * 1000, {s: statuses.count(s) for s in set(statuses)}


async def _measure_bare(port: int, pid: int, args: argparse.Namespace) -> None:
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    cpu, statuses = await cpu_per_request(url, pid, rate=args.rate, duration=args.duration)
    print(f"  {'bare ASGI app, GET /':60s} {cpu:6.3f} ms CPU per request  {statuses}")


async def _measure_orchestrator(stack: Stack, args: argparse.Namespace) -> None:
    assert stack.orchestrator is not None
    pid, url = stack.orchestrator.pid, stack.orchestrator.url
    for label, path, headers in (
        ("orchestrator GET /health/live", "/health/live", None),
        ("orchestrator GET /v1/instances, no token (401)", "/v1/instances?limit=1", None),
        (
            "orchestrator GET /v1/instances?limit=1 (auth, guard, query)",
            "/v1/instances?limit=1",
            stack.headers(),
        ),
    ):
        cpu, statuses = await cpu_per_request(
            url + path, pid, rate=args.rate, duration=args.duration, headers=headers
        )
        print(f"  {label:60s} {cpu:6.3f} ms CPU per request  {statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cost")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(f"paced GET at {args.rate:g}/s for {args.duration:g} s; the server process's CPU:")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _BARE_APP % port])
    try:
        asyncio.run(_measure_bare(port, server.pid, args))
    finally:
        server.terminate()
        server.wait(timeout=10)
    stack = Stack(workers=0)
    with stack.running():
        asyncio.run(_measure_orchestrator(stack, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
