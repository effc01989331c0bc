"""The running suite for client, CLI and example tests: registry, orchestrator and inbox served by
uvicorn on free ports in the test's loop (real Postgres and nats-server), and the example worker
(the worker SDK running ``examples.worker:steps``) for the test's tenant."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from definition_registry import Settings as RegistrySettings
from definition_registry import create_app as create_registry
from orchestrator.app import create_app as create_orchestrator
from orchestrator.settings import Settings as OrchestratorSettings
from task_inbox.app import create_app as create_inbox
from task_inbox.settings import Settings as InboxSettings
from wf_client import WorkflowClient
from wf_platform.testing import SigningKeys, serve, unique_tenant
from wf_stack import free_port
from wf_stack.pytest_plugin import database_url
from wf_worker import Worker

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``examples`` is importable from the repository root
    sys.path.insert(0, str(ROOT))

ROLES = (
    "definitions:read",
    "definitions:write",
    "instances:read",
    "instances:write",
    "tasks:work",
)


@dataclass
class RunningSuite:
    tenant: str
    keys: SigningKeys
    registry_url: str
    orchestrator_url: str
    inbox_url: str
    nats_url: str

    def token(self, *, sub: str = "user-1", groups: tuple[str, ...] = ("finance",)) -> str:
        return self.keys.token(tenant=self.tenant, sub=sub, roles=ROLES, groups=groups, ttl=600)

    def client(self, **options: Any) -> WorkflowClient:
        return WorkflowClient(
            registry_url=self.registry_url,
            orchestrator_url=self.orchestrator_url,
            inbox_url=self.inbox_url,
            token=options.pop("token", None) or self.token(),
            **options,
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WF_REGISTRY_URL": self.registry_url,
            "WF_ORCHESTRATOR_URL": self.orchestrator_url,
            "WF_INBOX_URL": self.inbox_url,
            "WF_TOKEN": self.token(),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    async def wf(
        self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Run the ``wf`` entry point in a subprocess (the servers keep serving in this loop)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wf_cli",
            *args,
            cwd=ROOT,
            env=env or self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture
async def running_suite(postgres_url: str, nats_url: str, keys: SigningKeys) -> AsyncIterator[RunningSuite]:
    tenant = unique_tenant("cli")
    ports = {"registry": free_port(), "orchestrator": free_port(), "inbox": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    suffix = uuid.uuid4().hex[:10]
    registry = RegistrySettings(
        database_url=database_url(postgres_url, f"reg_{suffix}"),
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=4,
        port=ports["registry"],
    )
    orchestrator = OrchestratorSettings(
        database_url=database_url(postgres_url, f"orch_{suffix}"),
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=8,
        outbox_poll_seconds=0.2,
        timer_poll_seconds=0.05,
        registry_url=urls["registry"],
        port=ports["orchestrator"],
    )
    inbox = InboxSettings(
        database_url=database_url(postgres_url, f"inbox_{suffix}"),
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=4,
        outbox_poll_seconds=0.2,
        consumer_tenant=tenant,
        consumer_durable=f"test-inbox-{tenant}",
        orchestrator_url=urls["orchestrator"],
        port=ports["inbox"],
    )
    from examples.worker import steps

    async with (
        serve(create_registry(registry), ports["registry"]),
        serve(create_orchestrator(orchestrator), ports["orchestrator"]),
        serve(create_inbox(inbox), ports["inbox"]),
    ):
        worker = Worker(steps, nats_url=nats_url, tenant=tenant, handle_signals=False, fetch_timeout=0.5)
        run = asyncio.get_running_loop().create_task(worker.run())
        await worker.wait_ready(timeout=10)
        try:
            yield RunningSuite(
                tenant=tenant,
                keys=keys,
                registry_url=urls["registry"],
                orchestrator_url=urls["orchestrator"],
                inbox_url=urls["inbox"],
                nats_url=nats_url,
            )
        finally:
            worker.stop()
            await asyncio.wait_for(run, timeout=15)
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            for info in await js.consumers_info("WF_JOBS"):
                if tenant in (info.config.filter_subject or ""):
                    await js.delete_consumer("WF_JOBS", info.name)
            await nc.close()
