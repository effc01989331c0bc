"""Results applied to the states this process wrote last (one statement, no lock), and what happens
when such a state is no longer the stored one."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from orchestrator.instance_cache import InstanceCache
from orchestrator.repositories import InstanceRepository, InstanceRow, NewInstance
from wf_platform.tenancy import TenantId
from workflow_core import load_definition
from workflow_core.engine import WorkflowMachine
from workflow_core.messages import JobMessage, JobResult
from workflow_core.models import InstanceState, Started, StepCompleted

from .conftest import Suite, fail, ok


def steps(name: str, count: int, **machine: Any) -> dict[str, Any]:
    nodes = {f"s{i}": {"type": "machine", "step_type": f"{name}.step", **machine} for i in range(count)}
    edges = [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(count - 1)]
    return {"name": name, "version": "1.0.0", "steps": nodes, "edges": edges}


def sample(suite: Suite, name: str, **labels: str) -> float:
    registry = suite.orchestrator.platform.metrics.registry
    return registry.get_sample_value(name, labels) or 0.0


async def test_results_for_instances_this_process_wrote_are_applied_without_a_lock(suite: Suite) -> None:
    await suite.register(steps("cached", 3))
    await suite.worker("cached.step", ok({"seen": True}))
    started = await suite.start("cached")
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"seen": True}
    # The start put the instance in the cache; each result's write put the next state there.
    assert sample(suite, "wf_result_chunks_total", path="cached") == 3
    assert sample(suite, "wf_result_chunks_total", path="locked") == 0
    assert sample(suite, "wf_results_total", status="completed") == 3
    assert sample(suite, "wf_jobs_dispatched_total", step_type="cached.step") == 3
    assert sample(suite, "wf_instances_total", event="completed") == 1


async def test_a_cached_state_behind_the_stored_row_writes_nothing_and_the_result_still_applies(
    suite: Suite,
) -> None:
    await suite.register(steps("behind", 1))
    gate = asyncio.Event()
    jobs: list[JobMessage] = []

    async def held(job: JobMessage) -> JobResult:
        jobs.append(job)
        await gate.wait()
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={"x": 1})

    await suite.worker("behind.step", held)
    started = await suite.start("behind")
    for _ in range(200):
        if jobs:
            break
        await asyncio.sleep(0.05)
    assert jobs, "the job never reached the worker"
    db = suite.orchestrator.tenant_db(TenantId(suite.tenant))
    async with db.transaction() as uow:
        before = await InstanceRepository(uow.conn).get(started["id"])
    assert before is not None and before.revision == 1
    # Another writer moves the row on (a signal nobody waits for yet: it is kept in the state).
    signalled = await suite.api.post(
        f"/v1/instances/{started['id']}/signals/poke", json={"data": {"n": 7}}, headers=suite.headers()
    )
    assert signalled.status_code == 200, signalled.text
    cache = suite.orchestrator.runtime.instances
    cache.drop(suite.tenant, before.id)
    cache.put(suite.tenant, before)  # this process still believes revision 1
    gate.set()
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"x": 1}
    assert sample(suite, "wf_write_conflicts_total", source="result") == 1
    assert sample(suite, "wf_result_chunks_total", path="locked") == 1
    async with db.transaction() as uow:
        after = await InstanceRepository(uow.conn).get(started["id"])
    assert after is not None and after.revision == 3  # the signal's write, then the result's
    assert [(s.name, s.data) for s in after.state.pending_signals] == [("poke", {"n": 7})]
    # What the result caused is counted once, though it was applied twice.
    assert sample(suite, "wf_instances_total", event="completed") == 1
    assert sample(suite, "wf_results_total", status="completed") == 1


async def test_a_result_after_a_timer_write_is_applied_without_a_lock(suite: Suite) -> None:
    # Attempt 1 fails; the timer loop dispatches attempt 2. That write (a transaction of the timer
    # path) puts the instance's new state in the cache too, so attempt 2's result is applied to it
    # with one statement, like attempt 1's.
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_interval": 0.1}
    await suite.register(steps("retried", 1, retry=retry))
    calls: list[int] = []
    failing, succeeding = fail("Flaky"), ok({"done": True})

    async def flaky(job: JobMessage) -> JobResult:
        calls.append(job.attempt)
        return await (failing if job.attempt == 1 else succeeding)(job)

    await suite.worker("retried.step", flaky)
    started = await suite.start("retried")
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"done": True}
    assert calls == [1, 2]
    assert sample(suite, "wf_result_chunks_total", path="cached") == 2
    assert sample(suite, "wf_result_chunks_total", path="locked") == 0
    assert sample(suite, "wf_results_total", status="failed") == 1
    assert sample(suite, "wf_results_total", status="completed") == 1


async def test_a_result_after_an_api_write_is_applied_without_a_lock(suite: Suite) -> None:
    await suite.register(steps("signalled", 1))
    gate = asyncio.Event()

    async def held(job: JobMessage) -> JobResult:
        await gate.wait()
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={"x": 1})

    await suite.worker("signalled.step", held)
    started = await suite.start("signalled")
    # The signal's transaction (the HTTP path) moves the row to revision 2 and puts that state in
    # the cache: the result then needs no read.
    signalled = await suite.api.post(
        f"/v1/instances/{started['id']}/signals/poke", json={"data": {"n": 7}}, headers=suite.headers()
    )
    assert signalled.status_code == 200, signalled.text
    gate.set()
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"x": 1}
    assert sample(suite, "wf_result_chunks_total", path="cached") == 1
    assert sample(suite, "wf_result_chunks_total", path="locked") == 0
    assert sample(suite, "wf_write_conflicts_total", source="result") == 0
    db = suite.orchestrator.tenant_db(TenantId(suite.tenant))
    async with db.transaction() as uow:
        after = await InstanceRepository(uow.conn).get(started["id"])
    assert after is not None and after.revision == 3  # the start, the signal, the result
    assert [(s.name, s.data) for s in after.state.pending_signals] == [("poke", {"n": 7})]


async def test_a_result_the_cached_state_would_ignore_is_decided_on_the_stored_row(suite: Suite) -> None:
    # Attempt 1 fails; a timer loop dispatches attempt 2, and this process's cache is made to miss
    # that write (as when another replica's timer loop fires): the cached state still has the step
    # waiting for its retry and would drop attempt 2's result as stale. The stored row decides, and
    # the instance completes.
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_interval": 0.1}
    await suite.register(steps("retried", 1, retry=retry))
    calls: list[int] = []
    second = asyncio.Event()
    failing, succeeding = fail("Flaky"), ok({"done": True})
    cache = suite.orchestrator.runtime.instances
    put = cache.put
    remembered: list[InstanceRow] = []

    def recording_put(tenant: str, row: InstanceRow, /) -> None:
        remembered.append(row)
        put(tenant, row)

    cache.put = recording_put  # type: ignore[method-assign]

    async def flaky(job: JobMessage) -> JobResult:
        calls.append(job.attempt)
        if job.attempt == 1:
            return await failing(job)
        await second.wait()
        return await succeeding(job)

    await suite.worker("retried.step", flaky)
    started = await suite.start("retried")
    for _ in range(200):
        if 2 in calls:
            break
        await asyncio.sleep(0.05)
    assert calls == [1, 2], "attempt 2 was never dispatched"
    # What this process wrote: the start (1), attempt 1's failure (2), the timer's retry (3).
    assert [row.revision for row in remembered] == [1, 2, 3]
    cache.drop(suite.tenant, started["id"])
    put(suite.tenant, remembered[1])  # as if this process had missed the timer's write
    second.set()
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"done": True}
    assert sample(suite, "wf_result_chunks_total", path="locked") == 1
    assert sample(suite, "wf_results_total", status="failed") == 1
    assert sample(suite, "wf_results_total", status="completed") == 1


# ---------------------------------------------------------------- the cache itself (no database)

_MACHINE = WorkflowMachine.for_definition(load_definition(steps("unit", 2)))


def _started(instance_id: str | None = None) -> InstanceState:
    event = Started(at=datetime.now(UTC), instance_id=instance_id or str(uuid.uuid4()), input={})
    return _MACHINE.apply(None, event).state


def _row(state: InstanceState, revision: int = 1) -> InstanceRow:
    new = NewInstance(
        state=state, trace_id=None, traceparent=None, idempotency_key=None, request_digest="", created_by=""
    )
    return dataclasses.replace(new.row(), revision=revision)


def _job(state: InstanceState) -> str:
    job_id = state.activations[0].job_id
    assert job_id is not None
    return job_id


def _complete(state: InstanceState) -> InstanceState:
    activation = state.activations[0]
    assert activation.job_id is not None
    event = StepCompleted(at=datetime.now(UTC), job_id=activation.job_id, attempt=1, output={})
    return _MACHINE.apply(state, event).state


def test_claim_finds_running_jobs_and_holds_their_instances_until_released() -> None:
    cache = InstanceCache()
    a, b = _started(), _started()
    cache.put("t1", _row(a))
    cache.put("t1", _row(b))
    claimed = cache.claim("t1", [_job(a), _job(b)])
    assert claimed is not None and {r.id for r in claimed.values()} == {a.instance_id, b.instance_id}
    assert cache.claim("t1", [_job(a)]) is None  # held by the first claim
    assert cache.claim("t2", [_job(a)]) is None  # another tenant's job of that id is unknown
    assert cache.claim("t1", [_job(a), str(uuid.uuid4())]) is None  # one unknown job: nothing
    cache.release("t1", [a.instance_id, b.instance_id])
    assert cache.claim("t1", [_job(a)]) is not None


def test_a_newer_revision_replaces_an_older_one_never_the_reverse() -> None:
    cache = InstanceCache()
    first = _started()
    second = _complete(first)  # the next step runs: a new job
    cache.put("t", _row(second, revision=2))
    cache.put("t", _row(first, revision=1))
    assert cache.claim("t", [_job(first)]) is None  # the finished job is not running any more
    claimed = cache.claim("t", [_job(second)])
    assert claimed is not None and claimed[_job(second)].revision == 2


def test_ended_instances_are_forgotten_and_the_cache_is_bounded() -> None:
    cache = InstanceCache(max_instances=3)
    state = _started()
    cache.put("t", _row(state))
    ended = _complete(_complete(state))
    assert ended.status.value == "completed"
    cache.put("t", _row(ended, revision=3))
    assert len(cache) == 0 and cache.size_bytes == 0
    states = [_started() for _ in range(5)]
    for s in states:
        cache.put("t", _row(s))
    assert len(cache) == 3
    assert cache.claim("t", [_job(states[0])]) is None  # least recently used: gone
    assert cache.claim("t", [_job(states[4])]) is not None
    by_bytes = InstanceCache(max_bytes=64 * 1024)
    for s in states:
        by_bytes.put("t", _row(s))
    assert 0 < by_bytes.size_bytes <= 64 * 1024
    big = _MACHINE.apply(
        None, Started(at=datetime.now(UTC), instance_id=str(uuid.uuid4()), input={"blob": "x" * 2000})
    ).state
    by_bytes.put("t", _row(big))  # over a 64th of the budget: not kept
    assert by_bytes.claim("t", [_job(big)]) is None


async def test_a_claim_waits_for_the_holder_then_gets_the_state_it_wrote() -> None:
    # The ten results of a fan-out arrive in concurrent chunks: the second waits for the first
    # (which puts the state it wrote) instead of conflicting with it.
    cache = InstanceCache()
    fork = WorkflowMachine.for_definition(
        load_definition(
            {
                "name": "fan",
                "version": "1.0.0",
                "steps": {
                    "a": {"type": "machine", "step_type": "fan.step"},
                    "b": {"type": "machine", "step_type": "fan.step"},
                },
                "edges": [],
            }
        )
    )
    state = fork.apply(None, Started(at=datetime.now(UTC), instance_id=str(uuid.uuid4()), input={})).state
    job_a, job_b = (a.job_id for a in state.activations)
    assert job_a is not None and job_b is not None
    cache.put("t", _row(state))
    first = cache.claim("t", [job_a])
    assert first is not None
    assert cache.claim("t", [job_b]) is None
    waiting = asyncio.create_task(cache.claim_waiting("t", [job_b], timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held by the first claim
    after_a = fork.apply(state, StepCompleted(at=datetime.now(UTC), job_id=job_a, attempt=1, output={})).state
    cache.put("t", _row(after_a, revision=2))
    cache.release("t", [state.instance_id])
    second = await asyncio.wait_for(waiting, 1)
    assert second is not None and second[job_b].revision == 2
    cache.release("t", [state.instance_id])
    # Held and never released: the wait gives up (the locked path then takes the chunk).
    assert cache.claim("t", [job_b]) is not None
    assert await cache.claim_waiting("t", [job_b], timeout=0.1) is None
