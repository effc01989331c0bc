"""Security tier harness: the three services in one process, on real Postgres and nats-server.

One ``stack`` serves every test of a module (module-scoped: starting three apps costs seconds, and
the tests of this tier only read or write their own tenants). The registry runs under
uvicorn on a free 127.0.0.1 port (the orchestrator calls it over HTTP, with the caller's token); the
orchestrator and the inbox run in-process (``asgi_client``) on the same loop, so their engines can be
instrumented from the tests. Every pool is 2 connections: isolation bugs of pooled connections show up
fastest when every request reuses one of two connections.

Tests that need other settings (a JWKS source, another limit) build their own app.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg  # pyright: ignore[reportMissingTypeStubs]
import httpx
import nats
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from definition_registry import Settings as RegistrySettings
from definition_registry import create_app as create_registry
from orchestrator.app import create_app as create_orchestrator
from orchestrator.settings import Settings as OrchestratorSettings
from orchestrator.streams import ORCHESTRATOR_STREAMS
from task_inbox import Settings as InboxSettings
from task_inbox import create_app as create_inbox
from task_inbox.services import TaskIntake
from wf_platform.logs import tenant_var
from wf_platform.plugin import get_platform
from wf_platform.streams import ensure_stream
from wf_platform.tenancy import TenantId
from wf_platform.testing import SigningKeys, asgi_client, bearer, in_own_task, serve, unique_tenant
from wf_stack import free_port
from wf_stack.pytest_plugin import database_url
from workflow_core.messages import DefinitionRef, TaskCreatedMessage

REGISTRY_ROLES = ("definitions:read", "definitions:write")
ORCHESTRATOR_ROLES = ("instances:read", "instances:write", "definitions:read", "definitions:write")
INBOX_ROLES = ("tasks:work", "tasks:admin")
ALL_ROLES = (*ORCHESTRATOR_ROLES, *INBOX_ROLES)

FORM = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string", "maxLength": 100}},
    "required": ["approved"],
}


def private_pem(keys: SigningKeys) -> str:
    return keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class RecordingHandler(logging.Handler):
    """Keeps every log record with the tenant it was logged for (``tenant_var`` at emit time)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[str | None, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is still worth a look
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.records.append((tenant_var.get(), record.name, text))


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@dataclass
class Stack:
    """The running suite and ways to talk to it."""

    keys: SigningKeys
    registry: httpx.AsyncClient
    orchestrator: httpx.AsyncClient
    inbox: httpx.AsyncClient
    registry_app: Any
    orchestrator_app: Any
    inbox_app: Any
    js: Any
    databases: dict[str, str]
    """service name -> plain ``postgresql://`` URL of its database."""
    logs: RecordingHandler
    settings: dict[str, Any] = field(default_factory=dict[str, Any])

    @property
    def clients(self) -> dict[str, httpx.AsyncClient]:
        return {"registry": self.registry, "orchestrator": self.orchestrator, "inbox": self.inbox}

    def headers(
        self, tenant: str, *, roles: tuple[str, ...] = ALL_ROLES, sub: str = "user-1"
    ) -> dict[str, str]:
        return bearer(self.keys.token(tenant=tenant, sub=sub, roles=roles, groups=["finance"]))

    async def register(self, tenant: str, definition: dict[str, Any]) -> dict[str, Any]:
        response = await self.registry.post("/v1/definitions", json=definition, headers=self.headers(tenant))
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def start(self, tenant: str, name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = await self.orchestrator.post(
            "/v1/instances", json={"definition": name, "input": data, **extra}, headers=self.headers(tenant)
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def seed_task(self, tenant: str, **fields: Any) -> str:
        """Open a task in the inbox directly through its intake (the consumer's code path minus NATS)."""
        values: dict[str, Any] = {
            "task_id": str(uuid.uuid4()),
            "tenant": tenant,
            "instance_id": str(uuid.uuid4()),
            "definition": DefinitionRef(name="expenses", version="1.0.0"),
            "step": "approve",
            "title": "Approve expense",
            "created_at": datetime.now(UTC),
            "form_schema": FORM,
            "candidate_groups": ["finance"],
        }
        values.update(fields)
        message = TaskCreatedMessage(**values)
        platform = get_platform(self.inbox_app)
        await platform.tenants.status(TenantId(tenant))
        await TaskIntake(platform.tenant_db(TenantId(tenant))).created(message)
        return message.task_id

    async def ensure_streams(self) -> None:
        for spec in ORCHESTRATOR_STREAMS:  # WF_JOBS, WF_RESULTS, WF_TASKS, WF_EVENTS
            await ensure_stream(self.js, spec)

    async def sql(self, service: str, query: str, *args: Any) -> list[Any]:
        conn: Any = await asyncpg.connect(self.databases[service])
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def tenants_and_schemas(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        """Per service: the tenant ids in ``wf.tenants`` and the ``t_*`` schemas."""
        found: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        for service in self.databases:
            tenants = await self.sql(service, "SELECT tenant_id FROM wf.tenants")
            schemas = await self.sql(service, "SELECT nspname FROM pg_namespace")
            found[service] = (
                frozenset(r["tenant_id"] for r in tenants),
                frozenset(r["nspname"] for r in schemas),
            )
        return found


@pytest_asyncio.fixture(loop_scope="session")
async def stack(session_stack: Stack) -> Stack:
    """The module's stack, with its streams checked. wf_stack empties JetStream whenever a new test
    module starts (its ``pytest_runtest_setup`` hook), so the stack lives for one module (a stack
    spanning modules loses its streams and consumers under its feet, and its NATS drain then hangs
    for the drain timeout on the orphaned subscriptions)."""
    await session_stack.ensure_streams()
    return session_stack


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def session_stack(postgres_url: str, nats_url: str, keys: SigningKeys) -> AsyncIterator[Stack]:
    suffix = uuid.uuid4().hex[:10]
    names = {
        "registry": f"sec_reg_{suffix}",
        "orchestrator": f"sec_orch_{suffix}",
        "inbox": f"sec_inbox_{suffix}",
    }
    urls = {service: database_url(postgres_url, name) for service, name in names.items()}
    common: dict[str, Any] = {
        "nats_url": nats_url,
        "jwt_public_key_pem": keys.public_pem,
        "db_pool_size": 2,
        "db_pool_timeout_seconds": 20.0,
        "tenant_cache_seconds": 30,
        "outbox_poll_seconds": 0.2,
    }
    registry_port = free_port()
    registry_settings = RegistrySettings(database_url=urls["registry"], port=registry_port, **common)
    orchestrator_settings = OrchestratorSettings(
        database_url=urls["orchestrator"],
        registry_url=f"http://127.0.0.1:{registry_port}",
        max_context_bytes=300_000,
        timer_poll_seconds=0.1,
        consumer_batch=32,
        **common,
    )
    consumer_tenant = unique_tenant("inboxc")
    inbox_settings = InboxSettings(
        database_url=urls["inbox"],
        consumer_tenant=consumer_tenant,
        consumer_durable=f"sec-inbox-{consumer_tenant}",
        orchestrator_url=f"http://127.0.0.1:{free_port()}",
        **common,
    )
    handler = RecordingHandler()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    registry_app = create_registry(registry_settings)
    orchestrator_app = create_orchestrator(orchestrator_settings)
    inbox_app = create_inbox(inbox_settings)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        async with (
            serve(registry_app, registry_port) as registry_url,
            httpx.AsyncClient(base_url=registry_url, timeout=30) as registry,
            in_own_task(asgi_client(orchestrator_app)) as orchestrator,
            in_own_task(asgi_client(inbox_app)) as inbox,
        ):
            yield Stack(
                keys=keys,
                registry=registry,
                orchestrator=orchestrator,
                inbox=inbox,
                registry_app=registry_app,
                orchestrator_app=orchestrator_app,
                inbox_app=inbox_app,
                js=js,
                databases={s: u.replace("postgresql+asyncpg", "postgresql") for s, u in urls.items()},
                logs=handler,
                settings={
                    "registry": registry_settings,
                    "orchestrator": orchestrator_settings,
                    "inbox": inbox_settings,
                },
            )
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        with contextlib.suppress(Exception):
            await js.delete_consumer("WF_TASKS", inbox_settings.consumer_durable)
        await nc.close()
        admin: Any = await asyncpg.connect(postgres_url)
        try:
            for name in names.values():
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
