"""A raw nats-py worker process for the benchmark: acks every ``bench.noop`` job with an empty output.

No SDK on purpose: the whole worker side of the NATS contract (DESIGN.md §5) in a few lines, the
fairest "steps are no-ops" setup. All worker processes share one durable pull consumer on
``WF_JOBS`` (filter ``wf.jobs.<tenant>.>``) and split the jobs. Each job: publish the result with a
JetStream publish (``Nats-Msg-Id: result:<job>:<attempt>``), and only once it is acknowledged, ack
the job. Several fetch loops per process keep a batch's publishes in flight together.

    python -m bench.worker --nats URL --tenant T --stats FILE [--loops 4] [--batch 64]

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
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig


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
    # Bind (creating if needed) the shared durable; each fetch loop then binds its own subscription
    # (its own inbox): concurrent fetches on one pull subscription steal each other's replies.
    await js.pull_subscribe(subject, durable=args.durable, stream="WF_JOBS", config=config)
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

    async def fetch_loop() -> None:
        subscription = await js.pull_subscribe_bind(durable=args.durable, stream="WF_JOBS")
        while not stop.is_set():
            try:
                messages = await subscription.fetch(args.batch, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception:  # a reconnect: try again shortly
                await asyncio.sleep(0.1)
                continue
            await asyncio.gather(*(handle(m) for m in messages))

    async def write_stats() -> None:
        tmp = args.stats + ".tmp"
        while not stop.is_set():
            with open(tmp, "w") as handle_:
                json.dump(stats, handle_)
            os.replace(tmp, args.stats)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    tasks = [loop.create_task(fetch_loop()) for _ in range(args.loops)]
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
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
