"""End to end: registry + orchestrator + inbox on real Postgres and NATS, a person in Chromium.

A human step of a running instance appears in the inbox; completing it in the browser resumes the
instance, which completes with the submitted data in its context. The task page shows the
instance's graph, fetched from the orchestrator with the person's own token and drawn by the
vendored Mermaid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from typing import Any

import httpx

from definition_registry import Settings as RegistrySettings
from definition_registry import create_app as create_registry
from orchestrator.app import create_app as create_orchestrator
from orchestrator.settings import Settings as OrchestratorSettings
from task_inbox import Settings, create_app
from wf_platform.testing import SigningKeys, bearer, serve
from wf_stack import free_port
from wf_stack.pytest_plugin import database_url

from .conftest import ARTIFACTS, browser_sign_in, chromium_page

ROLES = ("instances:read", "instances:write", "definitions:read", "definitions:write", "tasks:admin")

DEFINITION: dict[str, Any] = {
    "name": "expense",
    "version": "1.0.0",
    "description": "An expense that finance approves",
    "steps": {
        "approve": {
            "type": "human",
            "title": "Approve the expense",
            "description": "Check the receipt",
            "candidate_groups": ["finance"],
            "form_schema": {
                "type": "object",
                "properties": {
                    "approved": {"type": "boolean", "title": "Approved"},
                    "note": {"type": "string", "title": "Note", "maxLength": 100},
                },
                "required": ["approved"],
            },
        },
    },
    "edges": [],
}


async def test_a_human_step_completed_in_the_browser_resumes_the_instance(
    settings: Settings, postgres_url: str, nats_url: str, keys: SigningKeys, tenant: str
) -> None:
    registry_port, orchestrator_port, inbox_port = free_port(), free_port(), free_port()
    registry = create_registry(
        RegistrySettings(
            database_url=database_url(postgres_url, f"reg_{uuid.uuid4().hex[:10]}"),
            nats_url=nats_url,
            jwt_public_key_pem=keys.public_pem,
            db_pool_size=4,
        )
    )
    orchestrator = create_orchestrator(
        OrchestratorSettings(
            database_url=database_url(postgres_url, f"orch_{uuid.uuid4().hex[:10]}"),
            nats_url=nats_url,
            jwt_public_key_pem=keys.public_pem,
            db_pool_size=6,
            outbox_poll_seconds=0.2,
            timer_poll_seconds=0.1,
            registry_url=f"http://127.0.0.1:{registry_port}",
        )
    )
    inbox = create_app(
        dataclasses.replace(settings, orchestrator_url=f"http://127.0.0.1:{orchestrator_port}")
    )
    headers = bearer(keys.token(tenant=tenant, sub="starter", roles=ROLES))
    async with (
        serve(registry, registry_port) as registry_url,
        serve(orchestrator, orchestrator_port) as orchestrator_url,
        serve(inbox, inbox_port) as inbox_url,
        httpx.AsyncClient() as http,
        chromium_page("end-to-end") as page,
    ):
        registered = await http.post(f"{registry_url}/v1/definitions", json=DEFINITION, headers=headers)
        assert registered.status_code in (200, 201), registered.text
        started = await http.post(
            f"{orchestrator_url}/v1/instances",
            json={"definition": "expense", "input": {"amount": 42}},
            headers=headers,
        )
        assert started.status_code == 201, started.text
        instance_id = started.json()["id"]

        task: dict[str, Any] | None = None
        for _ in range(200):
            listed = await http.get(
                f"{inbox_url}/v1/tasks", params={"instance_id": instance_id}, headers=headers
            )
            assert listed.status_code == 200, listed.text
            if listed.json()["items"]:
                task = listed.json()["items"][0]
                break
            await asyncio.sleep(0.05)
        assert task is not None, "the human task never reached the inbox"
        assert task["title"] == "Approve the expense" and task["candidate_groups"] == ["finance"]

        await browser_sign_in(page, inbox_url, tenant=tenant, user="fin-1", groups="finance")
        await page.get_by_role("link", name="Approve the expense").click()
        await page.wait_for_url(f"{inbox_url}/tasks/{task['id']}")
        # Mermaid turned the graph text into an SVG, in the page, from /static.
        await page.locator("pre.mermaid svg").wait_for()
        await page.screenshot(path=str(ARTIFACTS / "e2e-task.png"), full_page=True)
        await page.get_by_label("Approved").select_option("true")
        await page.get_by_label("Note").fill("receipt ok")
        await page.get_by_role("button", name="Complete").click()
        await page.get_by_test_id("flash").wait_for()

        body: dict[str, Any] = {}
        for _ in range(200):
            body = (await http.get(f"{orchestrator_url}/v1/instances/{instance_id}", headers=headers)).json()
            if body["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "completed", body
        assert body["data"] == {"amount": 42, "approved": True, "note": "receipt ok"}
        await page.goto(f"{inbox_url}/?status=completed")
        await page.get_by_role("link", name="Approve the expense").wait_for()
        await page.screenshot(path=str(ARTIFACTS / "e2e-completed.png"), full_page=True)

    nats_cleanup = contextlib.suppress(Exception)
    with nats_cleanup:
        import nats

        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_consumer("WF_TASKS", settings.consumer_durable)
        await nc.close()
