"""Worker SDK tests: a real nats-server (wf_stack fixtures); the test creates the streams, as the
orchestrator would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from wf_platform.streams import WF_JOBS, WF_RESULTS, ensure_stream
from wf_platform.testing import unique_tenant
from wf_worker import Worker
from workflow_core.messages import DefinitionRef, JobMessage, JobResult


@dataclass
class Bus:
    """A tenant's view of the job and result streams, and the workers a test runs."""

    nc: Any
    js: JetStreamContext
    tenant: str
    results_sub: Any
    runs: list[asyncio.Task[None]] = field(default_factory=list[asyncio.Task[None]])
    workers: list[Worker] = field(default_factory=list[Worker])

    async def job(
        self,
        step_type: str,
        data: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
        attempt: int = 1,
        deadline: datetime | None = None,
        headers: dict[str, str] | None = None,
    ) -> JobMessage:
        job = JobMessage(
            job_id=job_id or uuid.uuid4().hex,
            tenant=self.tenant,
            instance_id=uuid.uuid4().hex,
            step=step_type.rsplit(".", maxsplit=1)[-1],
            step_type=step_type,
            attempt=attempt,
            input=data or {},
            deadline=deadline,
            definition=DefinitionRef(name="test", version="1.0.0"),
        )
        await self.js.publish(
            f"wf.jobs.{self.tenant}.{step_type}",
            msgspec.json.encode(job),
            headers={"Nats-Msg-Id": f"{job.job_id}:{attempt}", **(headers or {})},
        )
        return job

    async def results(self, count: int, *, timeout: float = 10.0) -> list[tuple[JobResult, dict[str, str]]]:
        """The next ``count`` results (acked), with their headers."""
        got: list[tuple[JobResult, dict[str, str]]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"only {len(got)} of {count} results arrived")
            try:
                messages = await self.results_sub.fetch(count - len(got), timeout=min(remaining, 1.0))
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for message in messages:
                got.append((msgspec.json.decode(message.data, type=JobResult), dict(message.headers or {})))
                await message.ack()
        return got

    async def no_more_results(self, *, within: float = 1.0) -> None:
        try:
            messages = await self.results_sub.fetch(1, timeout=within)
        except (nats.errors.TimeoutError, TimeoutError):
            return
        raise AssertionError(f"unexpected result {messages[0].data!r}")

    async def pending_jobs(self) -> int:
        info = await self.js.stream_info("WF_JOBS", subjects_filter=f"wf.jobs.{self.tenant}.>")
        return sum((info.state.subjects or {}).values())

    def worker(self, steps: Iterable[object], **options: Any) -> Worker:
        options.setdefault("tenant", self.tenant)
        options.setdefault("handle_signals", False)
        options.setdefault("fetch_timeout", 0.5)
        return Worker(steps, nats_url=self.nc.connected_url.geturl(), **options)

    async def run(self, worker: Worker) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(worker.run())
        self.runs.append(task)
        self.workers.append(worker)
        ready = asyncio.get_running_loop().create_task(worker.wait_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()
        assert ready in done, "worker not ready"
        return task


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, WF_JOBS)
    await ensure_stream(js, WF_RESULTS)
    tenant = unique_tenant("w")
    durable = f"test-results-{tenant}"
    results_sub = await js.pull_subscribe(
        f"wf.results.{tenant}",
        durable=durable,
        stream="WF_RESULTS",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, filter_subject=f"wf.results.{tenant}"),
    )
    bus = Bus(nc=nc, js=js, tenant=tenant, results_sub=results_sub)
    try:
        yield bus
    finally:
        for worker in bus.workers:
            worker.stop()
        if bus.runs:
            await asyncio.wait(bus.runs, timeout=10)
        for task in bus.runs:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Work-queue streams refuse overlapping consumers: leave none of this tenant behind.
        for stream in ("WF_JOBS", "WF_RESULTS"):
            for info in await js.consumers_info(stream):
                if tenant in (info.config.filter_subject or ""):
                    await js.delete_consumer(stream, info.name)
        await js.purge_stream("WF_JOBS", subject=f"wf.jobs.{tenant}.>")
        await nc.close()
