"""Inbox test harness: the app on a fresh database and the session's nats-server.

Each test has its own tenant, and the app's task consumer is bound to that tenant only, under a
durable name of its own that is deleted afterwards: ``WF_TASKS`` is a work-queue stream, which refuses
overlapping consumers, and other suites (the orchestrator's) bind per-tenant consumers on the same
server. Tasks are seeded either through NATS (as the orchestrator publishes them) or, where the test
is about the API, directly through :class:`~task_inbox.services.TaskIntake` (the same code path
minus the transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from cryptography.hazmat.primitives import serialization
from nats.js import JetStreamContext

from task_inbox import Settings, create_app
from task_inbox.inbox import Inbox, get_inbox
from task_inbox.services import TaskIntake
from wf_platform.plugin import get_platform
from wf_platform.tenancy import TenantId
from wf_platform.testing import SigningKeys, asgi_client, bearer, in_own_task, unique_tenant
from wf_stack import free_port
from workflow_core.messages import DefinitionRef, TaskCreatedMessage

WORK = ("tasks:work",)
ADMIN = ("tasks:admin",)

FORM = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "title": "Approved"},
        "amount": {"type": "integer", "minimum": 1, "maximum": 1000, "title": "Amount"},
        "reason": {"type": "string", "maxLength": 500, "title": "Reason"},
        "category": {"enum": ["travel", "office", "other"], "title": "Category"},
        "paid_on": {"type": "string", "format": "date", "title": "Paid on"},
        "address": {
            "type": "object",
            "title": "Address",
            "properties": {"city": {"type": "string", "minLength": 2}, "zip": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["approved", "amount"],
}


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


def private_pem(keys: SigningKeys) -> str:
    return keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def tenant() -> str:
    return unique_tenant("acme")


@pytest.fixture
def settings(fresh_database: str, nats_url: str, keys: SigningKeys, tenant: str) -> Settings:
    return Settings(
        database_url=fresh_database,
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=8,
        tenant_cache_seconds=30,
        outbox_poll_seconds=0.2,
        consumer_tenant=tenant,
        consumer_durable=f"test-inbox-{tenant}",
        dev_login=True,
        dev_private_key_pem=private_pem(keys),
        orchestrator_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: "graph unavailable"
    )


def created_message(tenant: str, **fields: Any) -> TaskCreatedMessage:
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
    return TaskCreatedMessage(**values)


@dataclass
class Harness:
    """The app of one test and ways to talk to it."""

    tenant: str
    keys: SigningKeys
    app: Any
    api: httpx.AsyncClient
    js: JetStreamContext
    settings: Settings

    @property
    def inbox(self) -> Inbox:
        return get_inbox(self.app)

    def headers(
        self,
        *,
        sub: str = "user-1",
        roles: Sequence[str] = WORK,
        groups: Sequence[str] = ("finance",),
        tenant: str | None = None,
    ) -> dict[str, str]:
        return bearer(self.keys.token(tenant=tenant or self.tenant, sub=sub, roles=roles, groups=groups))

    async def seed(self, **fields: Any) -> str:
        """Open a task directly through the intake (no NATS); returns its id."""
        message = created_message(self.tenant, **fields)
        platform = get_platform(self.app)
        await platform.tenants.status(TenantId(self.tenant))
        await TaskIntake(platform.tenant_db(TenantId(self.tenant))).created(message)
        return message.task_id

    async def publish(self, event: str, body: msgspec.Struct | bytes, *, msg_id: str | None = None) -> None:
        """Publish on ``wf.tasks.<tenant>.<event>`` as the orchestrator does."""
        payload = body if isinstance(body, bytes) else msgspec.json.encode(body)
        await self.js.publish(
            f"wf.tasks.{self.tenant}.{event}",
            payload,
            headers={"Nats-Msg-Id": msg_id or f"test:{uuid.uuid4()}"},
        )

    async def wait_for(self, task_id: str, predicate: Any = None, *, timeout: float = 10.0) -> dict[str, Any]:
        """Poll ``GET /v1/tasks/{id}`` as an admin until it exists (and ``predicate`` holds)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.api.get(f"/v1/tasks/{task_id}", headers=self.headers(roles=ADMIN))
            if response.status_code == 200 and (predicate is None or predicate(response.json())):
                return response.json()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"task {task_id} never got there: {response.status_code} {response.text}"
                )
            await asyncio.sleep(0.05)


@pytest.fixture
async def harness(
    settings: Settings, keys: SigningKeys, tenant: str, nats_url: str
) -> AsyncIterator[Harness]:
    app = create_app(settings)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        async with in_own_task(asgi_client(app)) as api:
            yield Harness(tenant=tenant, keys=keys, app=app, api=api, js=js, settings=settings)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer("WF_TASKS", settings.consumer_durable)
        await nc.close()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()  # checked once, at import
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "task-inbox"


@contextlib.asynccontextmanager
async def chromium_page(name: str) -> AsyncIterator[Any]:
    """A headless Chromium page (the system's binary; playwright never downloads one).

    Skips only when Chromium is not installed (``apt-get install -y chromium``); CI installs it.
    """
    if not CHROMIUM_INSTALLED:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.async_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            try:
                yield page
            except BaseException:
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"), full_page=True)
                raise
        finally:
            await browser.close()


async def browser_sign_in(page: Any, base_url: str, *, tenant: str, user: str, groups: str) -> None:
    """The dev sign-in form, as a person fills it."""
    await page.goto(f"{base_url}/")
    assert "/login" in page.url
    await page.get_by_label("Tenant").fill(tenant)
    await page.get_by_label("User").fill(user)
    await page.get_by_label("Groups").fill(groups)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/")
