"""The least service that can run a W1 instance (``bench/floor.py``), and with no database a bare
ASGI app (``bench/http_cost.py``): uvicorn on uvloop and httptools, no middleware, no access log.

Run as ``python -m bench.floor_service`` by :class:`wf_stack.services.ServiceProcess` (which waits
for ``GET /health/ready``: every ``GET`` answers 200). Settings from the environment:

- ``FLOOR_PORT``: the HTTP port;
- ``FLOOR_PG_URL`` and ``FLOOR_NATS_URL`` (both or neither): with them, ``POST /`` commits a row
  (table ``floor``), publishes the job on ``wf.jobs.floor.noop`` (acknowledged) and answers ``201
  {"id"}``; a pull consumer (``WF_RESULTS``, durable ``floor-service``) takes each result, commits
  an update, publishes ``wf.events.floor.completed`` (acknowledged) and acks. One coroutine per
  message, no batching. The streams, the consumer and the table are the driver's to create.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import asyncpg
import nats
import uvicorn
import uvloop

from wf_worker.pull import PullStream

TENANT = "floor"
RESULTS_DURABLE = "floor-service"

App = Any


def _bare_app(start: Any | None) -> App:
    """The ASGI app: ``GET`` answers 200; ``POST`` calls ``start()`` (201 with its id) if given."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:  # the request body (unused: the floor has no input to check)
            more = (await receive()).get("more_body", False)
        if scope["method"] == "POST" and start is not None:
            status, body = 201, json.dumps({"id": await start()}).encode()
        else:
            status, body = 200, b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                # Framed by length, as Litestar's responses are (without it uvicorn sends chunks).
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def _serve(port: int, pg_url: str | None, nats_url: str | None) -> None:
    pool: Any = None
    nc: Any = None
    consumer: asyncio.Task[None] | None = None
    start = None
    if pg_url and nats_url:
        pool = await asyncpg.create_pool(pg_url, min_size=4, max_size=10)
        nc = await nats.connect(nats_url)
        js = nc.jetstream()

        async def start_one() -> str:
            instance = str(uuid.uuid4())
            await pool.execute("INSERT INTO floor (id, state) VALUES ($1, 'running')", instance)
            job = json.dumps({"job_id": instance, "attempt": 1, "tenant": TENANT}).encode()
            await js.publish(f"wf.jobs.{TENANT}.noop", job, headers={"Nats-Msg-Id": f"job:{instance}"})
            return instance

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
            stream = await PullStream(nc, stream="WF_RESULTS", durable=RESULTS_DURABLE, batch=128).start()
            running: set[asyncio.Task[None]] = set()
            while True:
                for message in await stream.next_batch(128, timeout=1.0):
                    task = asyncio.get_running_loop().create_task(on_result(message))
                    running.add(task)
                    task.add_done_callback(running.discard)

        start = start_one
        consumer = asyncio.get_running_loop().create_task(results())
    config = uvicorn.Config(
        _bare_app(start),
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    await uvicorn.Server(config).serve()
    if consumer is not None:
        consumer.cancel()
    if nc is not None:
        await nc.close()
    if pool is not None:
        await pool.close()


if __name__ == "__main__":
    uvloop.run(
        _serve(
            int(os.environ["FLOOR_PORT"]), os.environ.get("FLOOR_PG_URL"), os.environ.get("FLOOR_NATS_URL")
        )
    )
