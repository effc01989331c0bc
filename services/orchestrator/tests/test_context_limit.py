"""A worker's output that would grow the context beyond ``max_context_bytes`` fails its step."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.settings import Settings
from workflow_core.messages import JobMessage, JobResult

from .conftest import Suite
from .test_end_to_end import chain

LIMIT = 4096


@pytest.fixture
def orchestrator_settings(orchestrator_settings: Settings) -> Settings:
    return dataclasses.replace(orchestrator_settings, max_context_bytes=LIMIT)


async def test_an_output_beyond_the_context_limit_fails_the_step_and_nothing_oversized_is_stored(
    suite: Suite,
) -> None:
    await suite.register(chain("greedy", "g.greedy", "g.after"))
    calls: list[str] = []

    async def greedy(job: JobMessage) -> JobResult:
        calls.append(job.step)
        return JobResult(
            job_id=job.job_id, attempt=job.attempt, status="completed", output={"blob": "x" * LIMIT}
        )

    async def after(job: JobMessage) -> JobResult:
        calls.append(job.step)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed")

    await suite.worker("g.greedy", greedy)
    await suite.worker("g.after", after)
    started = await suite.start("greedy")
    failed = await suite.wait_status(started["id"], "failed")
    incident = failed["incidents"][0]
    assert incident["step"] == "s0" and incident["error"]["type"] == "ContextTooLarge"
    assert not incident["error"]["retryable"]
    assert "blob" not in failed["data"]
    assert calls == ["s0"]  # not retried (the same output would come back), nothing after it ran
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert [(a["attempt"], a["outcome"]) for a in history["attempts"]] == [(1, "failed")]


async def test_an_output_within_the_limit_completes(suite: Suite) -> None:
    await suite.register(chain("modest", "m.modest"))

    async def modest(job: JobMessage) -> JobResult:
        return JobResult(
            job_id=job.job_id, attempt=job.attempt, status="completed", output={"blob": "x" * 100}
        )

    await suite.worker("m.modest", modest)
    started = await suite.start("modest")
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"]["blob"] == "x" * 100
