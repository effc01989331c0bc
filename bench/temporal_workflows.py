"""The Temporal side of W1-W3 (workflows + a no-op activity). A module of its own, importing only
temporalio: the SDK's workflow sandbox re-imports it, and that must stay deterministic."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

TASK_QUEUE = "bench"
_TIMEOUT = timedelta(seconds=60)


@activity.defn
async def noop() -> None:
    return None


@workflow.defn(name="W1")
class W1:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=_TIMEOUT)


@workflow.defn(name="W2")
class W2:
    @workflow.run
    async def run(self) -> None:
        for _ in range(10):
            await workflow.execute_activity(noop, start_to_close_timeout=_TIMEOUT)


@workflow.defn(name="W3")
class W3:
    @workflow.run
    async def run(self) -> None:
        await asyncio.gather(
            *(workflow.execute_activity(noop, start_to_close_timeout=_TIMEOUT) for _ in range(10))
        )
        await workflow.execute_activity(noop, start_to_close_timeout=_TIMEOUT)
