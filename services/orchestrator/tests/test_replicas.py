"""Two orchestrators against one database and one NATS: every instance completes, each step once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

import httpx
import pytest

from orchestrator.app import create_app
from wf_platform.testing import asgi_client, in_own_task
from workflow_core.messages import JobMessage, JobResult

from .conftest import Suite

INSTANCES = 500


@pytest.mark.timeout(600)
async def test_two_orchestrators_complete_500_instances_applying_each_step_once(suite: Suite) -> None:
    await suite.register(
        {
            "name": "pair",
            "version": "1.0.0",
            "steps": {
                "a": {"type": "machine", "step_type": "r.a"},
                "b": {"type": "machine", "step_type": "r.b"},
            },
            "edges": [{"source": "a", "target": "b"}],
        }
    )
    executed: Counter[tuple[str, str]] = Counter()

    def step(name: str) -> Any:
        async def handler(job: JobMessage) -> JobResult:
            executed[(job.instance_id, name)] += 1
            return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={name: True})

        return handler

    await suite.worker("r.a", step("a"))
    await suite.worker("r.b", step("b"))
    second = create_app(dataclasses.replace(suite.settings))
    async with in_own_task(asgi_client(second)) as other:
        apis: list[httpx.AsyncClient] = [suite.api, other]
        semaphore = asyncio.Semaphore(20)

        async def start(index: int) -> str:
            async with semaphore:
                response = await apis[index % 2].post(
                    "/v1/instances",
                    json={"definition": "pair", "input": {"i": index}},
                    headers=suite.headers(),
                )
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

        ids = await asyncio.gather(*(start(i) for i in range(INSTANCES)))
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            listed = await suite.api.get(
                "/v1/instances",
                params={"status": "completed", "definition": "pair", "limit": 200},
                headers=suite.headers(),
            )
            page = listed.json()
            completed = len(page["items"])
            cursor = page["next_cursor"]
            while cursor:
                page = (
                    await suite.api.get(
                        "/v1/instances",
                        params={"status": "completed", "definition": "pair", "limit": 200, "cursor": cursor},
                        headers=suite.headers(),
                    )
                ).json()
                completed += len(page["items"])
                cursor = page["next_cursor"]
            if completed == INSTANCES:
                break
            assert asyncio.get_running_loop().time() < deadline, f"only {completed} of {INSTANCES} completed"
            await asyncio.sleep(0.5)
    assert set(ids) == {instance for instance, _ in executed}
    assert all(count == 1 for count in executed.values()), [k for k, v in executed.items() if v != 1][:5]
    sample = await suite.get(ids[0])
    assert sample["data"]["a"] is True and sample["data"]["b"] is True
