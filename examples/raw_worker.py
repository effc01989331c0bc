"""A worker without any SDK: the whole worker side of the NATS contract (DESIGN.md §5) in plain
nats-py and JSON, to port to any language. It doubles ``value``: ``{"doubled": value * 2}``.

    python examples/raw_worker.py STEP_TYPE [NATS_URL] [TENANT|*]

1. Bind a durable pull consumer on stream WF_JOBS, filter ``wf.jobs.<tenant|*>.<step_type>``.
2. Per job: run the step on ``job["input"]``; publish ``{job_id, attempt, status, output|error}`` on
   ``wf.results.<tenant>`` with a JetStream publish (header ``Nats-Msg-Id: result:<job>:<attempt>``,
   ``traceparent`` passed on), and only once that is acknowledged, ack the job. Delivery is at
   least once: make side effects idempotent on ``job_id``. Long steps send ``in_progress`` acks.
"""

import asyncio
import json
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


async def handle(job: dict) -> dict:
    return {"doubled": job["input"]["value"] * 2}


async def main(step_type: str, url: str = "nats://127.0.0.1:4222", tenant: str = "*", stop=None) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    durable = f"raw-{'all' if tenant == '*' else tenant}-{step_type.replace('.', '_')}"
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=10)
    sub = await js.pull_subscribe(
        f"wf.jobs.{tenant}.{step_type}", durable=durable, stream="WF_JOBS", config=config
    )
    while stop is None or not stop.is_set():
        try:
            messages = await sub.fetch(10, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when none came
            continue
        for msg in messages:
            job = json.loads(msg.data)
            try:
                result = {"status": "completed", "output": await handle(job)}
            except Exception as exc:  # report it; retryable unless the step knows better
                result = {
                    "status": "failed",
                    "error": {"type": type(exc).__name__, "message": str(exc), "retryable": True},
                }
            result |= {"job_id": job["job_id"], "attempt": job["attempt"]}
            headers = {"Nats-Msg-Id": f"result:{job['job_id']}:{job['attempt']}", "Wf-Worker": "raw-worker"}
            if msg.headers and "traceparent" in msg.headers:
                headers["traceparent"] = msg.headers["traceparent"]
            await js.publish(f"wf.results.{job['tenant']}", json.dumps(result).encode(), headers=headers)
            await msg.ack()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
