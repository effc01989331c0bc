"""CPU per HTTP request: the orchestrator's routes against a bare ASGI app on the same server stack.

Paced ``GET`` requests (``--rate`` per second for ``--duration`` seconds, after 50 warm-up requests);
the server process's CPU time (user + system, :class:`bench.common.ProcessSampler`) divided by the
requests. The bare app (:mod:`bench.floor_service` without a database: uvicorn on uvloop and
httptools, no middleware, no access log) is the floor of any Python HTTP service here; the
orchestrator's ``/health/live`` adds Litestar and the middlewares, a ``401`` adds the auth
middleware's refusal, and ``GET /v1/instances`` adds a verified token, the role guard and a query.

    uv run --frozen --with psutil --with aiohttp python -m bench.http_cost [--rate 300] [--duration 10]
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from bench.common import ProcessSampler, paced
from bench.suite import Stack
from wf_stack import free_port
from wf_stack.services import ServiceProcess


async def cpu_per_request(
    url: str, pid: int, *, rate: float, duration: float, headers: dict[str, str] | None = None
) -> tuple[float, dict[int, int]]:
    """The process's CPU milliseconds per request, and the statuses seen."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one() -> int:
            async with session.get(url, headers=headers) as response:
                await response.read()
                return response.status

        for _ in range(50):
            await one()
        sampler = ProcessSampler({"server": (pid, False)}).start()
        statuses = (await paced(one, rate=rate, duration=duration)).results
        cpu_seconds = sampler.stop()["server"]["cpu_cores"] * sampler.elapsed
    return cpu_seconds / len(statuses) * 1000, {s: statuses.count(s) for s in set(statuses)}


def _report(label: str, cpu: float, statuses: dict[int, int]) -> None:
    print(f"  {label:60s} {cpu:6.3f} ms CPU per request  {statuses}")


async def _measure(urls: list[tuple[str, str, int, dict[str, str] | None]], args: argparse.Namespace) -> None:
    for label, url, pid, headers in urls:
        cpu, statuses = await cpu_per_request(
            url, pid, rate=args.rate, duration=args.duration, headers=headers
        )
        _report(label, cpu, statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cost")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(f"paced GET at {args.rate:g}/s for {args.duration:g} s; the server process's CPU:")
    stack = Stack(workers=0)
    with stack.running():
        assert stack.orchestrator is not None
        port = free_port()
        with ServiceProcess.start(
            "bench.floor_service", env={"FLOOR_PORT": str(port)}, port=port, log_dir=stack.log_dir
        ) as bare:
            orchestrator = stack.orchestrator
            asyncio.run(
                _measure(
                    [
                        ("bare ASGI app, GET /", bare.url + "/", bare.pid, None),
                        (
                            "orchestrator GET /health/live",
                            orchestrator.url + "/health/live",
                            orchestrator.pid,
                            None,
                        ),
                        (
                            "orchestrator GET /v1/instances, no token (401)",
                            orchestrator.url + "/v1/instances?limit=1",
                            orchestrator.pid,
                            None,
                        ),
                        (
                            "orchestrator GET /v1/instances?limit=1 (auth, guard, query)",
                            orchestrator.url + "/v1/instances?limit=1",
                            orchestrator.pid,
                            stack.headers(),
                        ),
                    ],
                    args,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
