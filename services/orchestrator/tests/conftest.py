"""Orchestrator test harness: real Postgres, real nats-server, the real registry served over HTTP.

Each test gets its own databases and tenant; the registry runs under uvicorn on a free port in the
test's event loop, the orchestrator app runs in the same loop (consumers and timer loop included),
and the "workers" are plain nats-py clients written in the tests (no SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from definition_registry import Settings as RegistrySettings
from definition_registry import create_app as create_registry
from orchestrator.app import create_app, get_orchestrator
from orchestrator.settings import Settings
from wf_platform.testing import SigningKeys, asgi_client, bearer, in_own_task, serve, unique_tenant
from wf_stack import free_port
from wf_stack.pytest_plugin import database_url
from workflow_core.messages import JobMessage, JobResult, TaskCompletedMessage, TaskCreatedMessage
from workflow_core.models import StepError

ROLES = ("instances:read", "instances:write", "definitions:read", "definitions:write")


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@dataclass
class Suite:
    """The running registry + orchestrator of one test, and ways to talk to them."""

    tenant: str
    keys: SigningKeys
    api: httpx.AsyncClient
    registry: httpx.AsyncClient
    js: JetStreamContext
    nc: Any
    app: Any
    settings: Settings
    workers: list[asyncio.Task[None]] = field(default_factory=list[asyncio.Task[None]])

    def headers(
        self, *, roles: tuple[str, ...] = ROLES, tenant: str | None = None, sub: str = "user-1"
    ) -> dict[str, str]:
        return bearer(self.keys.token(tenant=tenant or self.tenant, sub=sub, roles=roles))

    async def register(self, definition: dict[str, Any]) -> None:
        response = await self.registry.post("/v1/definitions", json=definition, headers=self.headers())
        assert response.status_code in (200, 201), response.text

    async def start(self, name: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        response = await self.api.post(
            "/v1/instances", json={"definition": name, "input": data or {}, **extra}, headers=self.headers()
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def get(self, instance_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/instances/{instance_id}", headers=self.headers())
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(
        self, instance_id: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll the instance until ``predicate`` holds (bounded in time)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body = await self.get(instance_id)
            if predicate(body):
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"instance never got there: {body}")
            await asyncio.sleep(0.05)

    async def wait_status(self, instance_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait_for(instance_id, lambda b: b["status"] in statuses, timeout=timeout)

    @property
    def orchestrator(self) -> Any:
        return get_orchestrator(self.app)

    async def worker(
        self,
        step_type: str,
        handler: Callable[[JobMessage], Awaitable[JobResult | None]],
        *,
        tenant: str | None = None,
    ) -> None:
        """A raw nats-py worker: fetch jobs of ``step_type``, publish the handler's result, then ack."""
        tenant = tenant or self.tenant
        subject = f"wf.jobs.{tenant}.{step_type}"
        durable = f"test-{tenant}-{step_type.replace('.', '_')}"
        subscription = await self.js.pull_subscribe(
            subject,
            durable=durable,
            stream="WF_JOBS",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, filter_subject=subject),
        )

        async def loop() -> None:
            while True:
                try:
                    messages = await subscription.fetch(16, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for message in messages:
                    job = msgspec.json.decode(message.data, type=JobMessage)
                    result = await handler(job)
                    if result is not None:
                        await self.js.publish(
                            f"wf.results.{tenant}",
                            msgspec.json.encode(result),
                            headers={
                                "Nats-Msg-Id": f"result:{job.job_id}:{job.attempt}",
                                "Wf-Worker": "test-worker",
                            },
                        )
                    await message.ack()

        self.workers.append(asyncio.get_running_loop().create_task(loop()))

    async def task_messages(self, tenant: str | None = None) -> Any:
        """A subscription to ``wf.tasks.<tenant>.created`` (the test plays the inbox)."""
        tenant = tenant or self.tenant
        subject = f"wf.tasks.{tenant}.created"
        return await self.js.pull_subscribe(
            subject,
            durable=f"test-inbox-{tenant}",
            stream="WF_TASKS",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, filter_subject=subject),
        )

    async def next_task(self, subscription: Any, *, timeout: float = 10.0) -> TaskCreatedMessage:
        messages = await subscription.fetch(1, timeout=timeout)
        await messages[0].ack()
        return msgspec.json.decode(messages[0].data, type=TaskCreatedMessage)

    async def complete_task(
        self, task: TaskCreatedMessage, data: dict[str, Any], *, user: str = "user-1"
    ) -> None:
        from datetime import UTC, datetime

        message = TaskCompletedMessage(
            task_id=task.task_id,
            tenant=task.tenant,
            instance_id=task.instance_id,
            data=data,
            user=user,
            completed_at=datetime.now(UTC),
        )
        await self.js.publish(
            f"wf.tasks.{task.tenant}.completed",
            msgspec.json.encode(message),
            headers={"Nats-Msg-Id": f"task:{task.task_id}:completed"},
        )


def ok(output: dict[str, Any] | None = None) -> Callable[[JobMessage], Awaitable[JobResult]]:
    async def handler(job: JobMessage) -> JobResult:
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output=output or {})

    return handler


def fail(type_: str = "Boom", *, retryable: bool = True) -> JobResult | Any:
    async def handler(job: JobMessage) -> JobResult:
        return JobResult(
            job_id=job.job_id,
            attempt=job.attempt,
            status="failed",
            error=StepError(type=type_, message="it broke", retryable=retryable),
        )

    return handler


@pytest.fixture
def orchestrator_settings(postgres_url: str, nats_url: str, keys: SigningKeys) -> Settings:
    return Settings(
        database_url=database_url(postgres_url, f"orch_{uuid.uuid4().hex[:10]}"),
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=8,
        outbox_poll_seconds=0.2,
        timer_poll_seconds=0.05,
        consumer_batch=64,
    )


@pytest.fixture
async def suite(
    postgres_url: str, nats_url: str, keys: SigningKeys, orchestrator_settings: Settings
) -> AsyncIterator[Suite]:
    registry_port = free_port()
    registry_settings = RegistrySettings(
        database_url=database_url(postgres_url, f"reg_{uuid.uuid4().hex[:10]}"),
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=4,
        port=registry_port,
    )
    settings = dataclasses.replace(orchestrator_settings, registry_url=f"http://127.0.0.1:{registry_port}")
    app = create_app(settings)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    async with (
        serve(create_registry(registry_settings), registry_port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry_port}") as registry,
        in_own_task(asgi_client(app)) as api,
    ):
        suite = Suite(
            tenant=unique_tenant("acme"),
            keys=keys,
            api=api,
            registry=registry,
            js=js,
            nc=nc,
            app=app,
            settings=settings,
        )
        try:
            yield suite
        finally:
            for worker in suite.workers:
                worker.cancel()
            for worker in suite.workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
    await nc.close()
