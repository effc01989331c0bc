"""A raw nats-py worker process for the benchmark: acks every ``bench.noop`` job with an empty output.

No step SDK on purpose: the whole worker side of the NATS contract (DESIGN.md §5) in a few lines,
the fairest "steps are no-ops" setup. All worker processes share one durable pull consumer on
``WF_JOBS`` (filter ``wf.jobs.<tenant>.>``) and split the jobs. Each job: publish the result with a
JetStream publish (``Nats-Msg-Id: result:<job>:<attempt>``), and only once it is acknowledged, ack
the job. Jobs are pulled continuously (:class:`wf_worker.pull.PullStream`; nats-py's ``fetch`` held
a part-filled batch until its request expired: p99 816 ms per job) and handled as they arrive, at
most ``--in-flight`` at once.

    python -m bench.worker --nats URL --tenant T --stats FILE [--in-flight 256] [--batch 128]

The time spent handling each job (decode → result acknowledged → job acked) is summed and written
to ``--stats`` every 0.5 s as JSON ``{"jobs": n, "busy_s": s}``: the "worker time" that the engine
overhead per step excludes.
"""

# ruff: noqa: ASYNC230

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time

import msgspec
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig

from wf_worker.pull import PullStream


class _Job(msgspec.Struct):
    job_id: str
    attempt: int
    tenant: str


async def main(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.nats, max_reconnect_attempts=-1)
    js = nc.jetstream()
    subject = f"wf.jobs.{args.tenant}.>"
    config = ConsumerConfig(
        durable_name=args.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_ack_pending=20_000,
        filter_subject=subject,
    )
    await js.add_consumer("WF_JOBS", config)  # creates the shared durable, or finds it
    decoder = msgspec.json.Decoder(_Job)
    stats = {"jobs": 0, "busy_s": 0.0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def handle(message: nats.aio.msg.Msg) -> None:
        started = time.perf_counter()
        job = decoder.decode(message.data)
        body = b'{"job_id":"%s","attempt":%d,"status":"completed","output":{}}' % (
            job.job_id.encode(),
            job.attempt,
        )
        await js.publish(
            f"wf.results.{job.tenant}",
            body,
            headers={"Nats-Msg-Id": f"result:{job.job_id}:{job.attempt}", "Wf-Worker": args.name},
        )
        await message.ack()
        stats["jobs"] += 1
        stats["busy_s"] += time.perf_counter() - started

    slots = asyncio.Semaphore(args.in_flight)
    running: set[asyncio.Task[None]] = set()

    async def limited(message: nats.aio.msg.Msg) -> None:
        try:
            await handle(message)
        finally:
            slots.release()

    async def pull_loop() -> None:
        jobs = await PullStream(nc, stream="WF_JOBS", durable=args.durable, batch=args.batch).start()
        while not stop.is_set():
            try:
                messages = await jobs.next_batch(args.batch, timeout=1.0)
            except Exception:  # a reconnect: try again shortly
                await asyncio.sleep(0.1)
                continue
            for message in messages:
                await slots.acquire()
                task = loop.create_task(limited(message))
                running.add(task)
                task.add_done_callback(running.discard)
        await jobs.close()

    async def write_stats() -> None:
        tmp = args.stats + ".tmp"
        while not stop.is_set():
            with open(tmp, "w") as handle_:
                json.dump(stats, handle_)
            os.replace(tmp, args.stats)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    tasks = [loop.create_task(pull_loop())]
    writer = loop.create_task(write_stats())
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, writer, return_exceptions=True)
    with open(args.stats, "w") as handle_:
        json.dump(stats, handle_)
    await nc.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--nats", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--durable", default="bench-workers")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--name", default=f"bench-worker-{os.getpid()}")
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse()))
