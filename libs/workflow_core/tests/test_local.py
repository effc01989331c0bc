"""LocalEngine specifics: real retries with backoff, bounded memory, errors of step code, steps
run inline after one another."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from workflow_core import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    InstanceNotFoundError,
    InstanceStatus,
    LocalEngine,
    RetryableStepError,
    RetryPolicy,
    StepFailedError,
    WorkflowContext,
    WorkflowDefinition,
    load_definition,
)
from workflow_core.local import _INLINE_STEPS  # pyright: ignore[reportPrivateUsage]


class Flaky(BaseMachineStep):
    name = "flaky"
    retry = RetryPolicy(max_attempts=3, backoff="fixed", initial_interval=0.05)
    calls: list[tuple[int, str | None, float]] = []

    async def execute(self, context: WorkflowContext) -> None:
        Flaky.calls.append((context.attempt, context.job_id, time.monotonic()))
        if context.get("succeed_on", 99) > context.attempt:
            raise RetryableStepError("not yet")
        context.set("done_on", context.attempt)


async def test_a_retryable_failure_is_retried_with_backoff_and_then_succeeds() -> None:
    Flaky.calls = []
    engine = LocalEngine()
    instance = await engine.start(
        WorkflowDefinition("f", "1.0.0", steps={"flaky": Flaky}), input={"succeed_on": 3}
    )
    await engine.run_until_idle(timeout=5)
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["done_on"] == 3
    assert [c[0] for c in Flaky.calls] == [1, 2, 3]
    assert len({c[1] for c in Flaky.calls}) == 1  # one job id across attempts
    gaps = [b[2] - a[2] for a, b in zip(Flaky.calls, Flaky.calls[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps


async def test_retries_exhausted_become_an_incident_and_retry_resumes() -> None:
    Flaky.calls = []
    engine = LocalEngine()
    instance = await engine.start(
        WorkflowDefinition("f", "1.0.0", steps={"flaky": Flaky}), input={"succeed_on": 99}
    )
    await engine.run_until_idle(timeout=5)
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.FAILED
    assert len(Flaky.calls) == 3
    assert state.incidents[0].error is not None and state.incidents[0].error.type == "RetryableStepError"
    await engine.retry(instance.id, data={"succeed_on": 4})
    await engine.run_until_idle(timeout=5)
    assert engine.get(instance.id).status is InstanceStatus.COMPLETED


async def test_unexpected_exceptions_are_retryable_and_declared_ones_are_not() -> None:
    class Broken(BaseMachineStep):
        name = "broken"
        retry = RetryPolicy(max_attempts=2, initial_interval=0.01)
        non_retryable_errors = (KeyError,)
        seen = 0

        async def execute(self, context: WorkflowContext) -> None:
            Broken.seen += 1
            raise KeyError("final") if context.get("final") else RuntimeError("again")

    engine = LocalEngine()
    first = await engine.start(
        WorkflowDefinition("b", "1.0.0", steps={"broken": Broken}), input={"final": False}
    )
    await engine.run_until_idle(timeout=5)
    assert Broken.seen == 2
    assert engine.get(first.id).incidents[0].error is not None
    Broken.seen = 0
    second = await engine.start(
        WorkflowDefinition("b", "1.0.0", steps={"broken": Broken}), input={"final": True}
    )
    await engine.run_until_idle(timeout=5)
    assert Broken.seen == 1
    error = engine.get(second.id).incidents[0].error
    assert error is not None and error.type == "KeyError" and not error.retryable


async def test_finished_instances_are_not_kept_beyond_the_window() -> None:
    class Noop(BaseMachineStep):
        name = "noop"

        async def execute(self, context: WorkflowContext) -> None:
            return None

    engine = LocalEngine(keep_finished=10)
    definition = WorkflowDefinition("n", "1.0.0", steps={"noop": Noop})
    ids = [(await engine.start(definition)).id for _ in range(50)]
    await engine.run_until_idle(timeout=5)
    assert len(engine.instances()) == 10
    assert engine.get(ids[-1]).status is InstanceStatus.COMPLETED
    try:
        engine.get(ids[0])
    except InstanceNotFoundError:
        pass
    else:
        raise AssertionError("the oldest finished instance should be gone")


async def test_a_wire_definition_runs_with_steps_registered_by_step_type() -> None:
    class Charge(BaseMachineStep):
        name = "charge"
        step_type = "payments.charge"

        async def execute(self, context: WorkflowContext) -> None:
            context.set("charged", context.get("amount"))

    definition = load_definition(
        {"name": "w", "version": "1.0.0", "steps": {"c": {"type": "machine", "step_type": "payments.charge"}}}
    )
    engine = LocalEngine(steps=[Charge])
    instance = await engine.start(definition, input={"amount": 7})
    await engine.run_until_idle(timeout=5)
    assert engine.get(instance.id).data["charged"] == 7

    without = LocalEngine()
    failed = await without.start(definition)
    await without.run_until_idle(timeout=5)
    state = without.get(failed.id)
    assert state.status is InstanceStatus.FAILED
    assert state.incidents[0].error is not None and state.incidents[0].error.type == "NoImplementation"


class Count(BaseMachineStep):
    name = "count"
    step_type = "test.count"
    ticks = 0
    """Advanced by a coroutine beside the engine."""
    seen: list[int] = []
    """``ticks`` as each step saw it."""

    async def execute(self, context: WorkflowContext) -> None:
        Count.seen.append(Count.ticks)
        context.set("count", int(context.get("count", 0)) + 1)


def chain(length: int) -> dict[str, Any]:
    steps = {f"s{i}": {"type": "machine", "step_type": "test.count"} for i in range(length)}
    edges = [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(length - 1)]
    return {"name": "chain", "version": "1.0.0", "steps": steps, "edges": edges}


async def test_a_long_chain_of_steps_runs_to_the_end_and_lets_other_coroutines_run() -> None:
    Count.ticks, Count.seen = 0, []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            Count.ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    engine = LocalEngine(steps=[Count])
    length = 3 * _INLINE_STEPS
    instance = await engine.start(load_definition(chain(length)))
    await engine.run_until_idle(timeout=5)
    done.set()
    await ticking
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["count"] == length
    assert [r.node for r in state.history] == [f"s{i}" for i in range(length)]
    # The steps run one after the other in one task, which yields to the event loop on its way.
    assert len(set(Count.seen)) >= 3


async def test_branches_forked_after_a_step_still_run_concurrently() -> None:
    # "wait" can only finish once "free" ran: run one after the other, they would deadlock.
    free = asyncio.Event()

    class First(BaseMachineStep):
        name = "first"

        async def execute(self, context: WorkflowContext) -> None:
            return None

    class Wait(BaseMachineStep):
        name = "wait"

        async def execute(self, context: WorkflowContext) -> None:
            await asyncio.wait_for(free.wait(), timeout=2)
            context.set("waited", True)

    class Free(BaseMachineStep):
        name = "free"

        async def execute(self, context: WorkflowContext) -> None:
            free.set()

    definition = WorkflowDefinition(
        "fork",
        "1.0.0",
        steps={"first": First, "wait": Wait, "free": Free},
        edges=[Edge("first", "wait"), Edge("first", "free")],
    )
    engine = LocalEngine()
    instance = await engine.start(definition)
    await engine.run_until_idle(timeout=5)
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["waited"] is True


async def test_a_late_result_of_an_instance_no_longer_kept_is_dropped_quietly() -> None:
    release = asyncio.Event()

    class Blocked(BaseMachineStep):
        name = "blocked"

        async def execute(self, context: WorkflowContext) -> None:
            await release.wait()

    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        engine = LocalEngine(keep_finished=0)
        instance = await engine.start(WorkflowDefinition("b", "1.0.0", steps={"blocked": Blocked}))
        await asyncio.sleep(0)
        assert (await engine.cancel(instance.id)).status is InstanceStatus.CANCELLED
        assert engine.instances() == []
        release.set()
        await engine.run_until_idle(timeout=5)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert errors == []


def test_context_data_is_a_deep_copy_of_what_it_was_given() -> None:
    from datetime import date

    from workflow_core.context import WorkflowContext

    given = {"items": [{"tags": ["a"]}], "nested": {"deep": {"n": 1}}, "when": date(2026, 1, 1)}
    context = WorkflowContext(given)
    context.get("items")[0]["tags"].append("b")
    context.get("nested")["deep"]["n"] = 2
    assert given == {"items": [{"tags": ["a"]}], "nested": {"deep": {"n": 1}}, "when": date(2026, 1, 1)}
    assert context.get("when") == date(2026, 1, 1)


async def test_a_state_handed_out_does_not_change_under_its_holder() -> None:
    class Step(BaseMachineStep):
        name = "step"

        async def execute(self, context: WorkflowContext) -> None:
            context.set(context.metadata["step"], context.attempt)

    class Gate(BaseHumanStep):
        name = "gate"
        title = "Gate"

    definition = WorkflowDefinition(
        "s",
        "1.0.0",
        steps={"a": Step, "b": Step, "gate": Gate, "c": Step},
        edges=[Edge("a", "b"), Edge("b", "gate"), Edge("gate", "c")],
    )
    engine = LocalEngine()
    started = await engine.start(definition, input={"n": 1})
    await engine.run_until_idle(timeout=5)
    waiting = engine.get(started.id)
    assert (started.status, started.data, started.history) == (InstanceStatus.RUNNING, {"n": 1}, [])
    assert waiting.status is InstanceStatus.WAITING
    assert waiting.data == {"n": 1, "a": 1, "b": 1}
    history = list(waiting.history)
    task = engine.open_tasks(started.id)[0]
    done = await engine.complete_task(task.id, data={})
    await engine.run_until_idle(timeout=5)
    assert waiting.status is InstanceStatus.WAITING and waiting.history == history
    assert waiting.data == {"n": 1, "a": 1, "b": 1}
    assert engine.get(started.id).data == {"n": 1, "a": 1, "b": 1, "c": 1}
    assert done is not waiting


async def test_a_step_sees_its_metadata_and_the_ids_are_uuid_strings() -> None:
    import uuid

    seen: list[dict[str, Any]] = []

    class Look(BaseMachineStep):
        name = "look"
        step_type = "look.at"

        async def execute(self, context: WorkflowContext) -> None:
            seen.append({**context.metadata, "job": context.job_id, "try": context.attempt})

    engine = LocalEngine()
    instance = await engine.start(WorkflowDefinition("m", "2.0.0", steps={"look": Look}), user_id="u-1")
    await engine.run_until_idle(timeout=5)
    (metadata,) = seen
    assert metadata == {
        "instance_id": instance.id,
        "definition": "m",
        "version": "2.0.0",
        "step": "look",
        "step_type": "look.at",
        "job_id": metadata["job"],
        "attempt": 1,
        "job": metadata["job"],
        "try": 1,
    }
    assert uuid.UUID(metadata["job_id"]) and metadata["job_id"] != instance.id
    assert engine.get(instance.id).history[0].job_id == metadata["job_id"]


async def test_a_step_sees_who_started_the_instance_and_the_history_as_it_was_dispatched() -> None:
    kept: list[WorkflowContext] = []

    class Look(BaseMachineStep):
        name = "look"

        async def execute(self, context: WorkflowContext) -> None:
            kept.append(context)
            context.set(context.metadata["step"], True)

    definition = WorkflowDefinition(
        "m", "1.0.0", steps={"a": Look, "b": Look, "c": Look}, edges=[Edge("a", "b"), Edge("b", "c")]
    )
    engine = LocalEngine()
    instance = await engine.start(definition, user_id="u-1", tenant_id="t-1")
    done = await engine.wait(instance.id)
    seen = [(c.user_id, c.tenant_id, [r.node for r in c.history]) for c in kept]
    assert seen == [("u-1", "t-1", []), ("u-1", "t-1", ["a"]), ("u-1", "t-1", ["a", "b"])]
    # A step that kept its context and sets more after it returned changes nothing.
    kept[0].set("late", True)
    assert "late" not in done.data and "late" not in engine.get(instance.id).data
    assert done.data == {"a": True, "b": True, "c": True}


async def test_wait_returns_when_the_instance_completes_fails_or_is_cancelled() -> None:
    class Step(BaseMachineStep):
        name = "step"

        async def execute(self, context: WorkflowContext) -> None:
            if context.get("fail"):
                raise StepFailedError("no", retryable=False)
            context.set("done", True)

    class Gate(BaseHumanStep):
        name = "gate"
        title = "Gate"

    engine = LocalEngine()
    ok = await engine.start(WorkflowDefinition("ok", "1.0.0", steps={"step": Step}))
    done = await engine.wait(ok.id)
    assert (done.status, done.data) == (InstanceStatus.COMPLETED, {"done": True})
    assert await engine.wait(ok.id) == done  # already ended: at once
    failing = await engine.start(WorkflowDefinition("f", "1.0.0", steps={"step": Step}), input={"fail": True})
    assert (await engine.wait(failing.id)).status is InstanceStatus.FAILED
    gated = await engine.start(WorkflowDefinition("g", "1.0.0", steps={"gate": Gate}))
    impatient = asyncio.ensure_future(engine.wait(gated.id))
    await asyncio.sleep(0)
    impatient.cancel()
    patient = asyncio.ensure_future(engine.wait(gated.id))
    await asyncio.sleep(0)
    assert not patient.done()
    await engine.cancel(gated.id)
    assert (await asyncio.wait_for(patient, 5)).status is InstanceStatus.CANCELLED
    assert impatient.cancelled()


class SlowOnce(BaseMachineStep):
    """Overruns its deadline (1 s) on attempt 1 and keeps running until 1.3 s; attempt 2 runs from
    ~1.01 s to ~1.61 s, within its own deadline (margins of 0.3 s or more either way)."""

    name = "slow_once"
    timeout = 1.0
    retry = RetryPolicy(max_attempts=2, backoff="fixed", initial_interval=0.01)
    ended: list[int] = []

    async def execute(self, context: WorkflowContext) -> None:
        await asyncio.sleep(1.3 if context.attempt == 1 else 0.6)
        SlowOnce.ended.append(context.attempt)
        context.set("attempt", context.attempt)


async def test_aclose_stops_a_retry_after_the_late_attempt_of_the_same_job_ended() -> None:
    # A deadline retry reuses the job id: the late attempt 1 ends (and leaves the running jobs)
    # while attempt 2 still runs; attempt 2 must still be known as running, and stopped by aclose.
    SlowOnce.ended = []
    engine = LocalEngine()
    instance = await engine.start(WorkflowDefinition("slow", "1.0.0", steps={"slow_once": SlowOnce}))
    deadline = time.monotonic() + 5
    while SlowOnce.ended != [1] and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
        await asyncio.sleep(0.01)
    assert SlowOnce.ended == [1]
    assert engine.get(instance.id).status is InstanceStatus.RUNNING  # attempt 2 runs
    await engine.aclose()
    await asyncio.sleep(0.5)  # attempt 2 would have ended by now
    assert SlowOnce.ended == [1]


def test_a_forked_process_makes_other_instance_ids_than_its_parent() -> None:
    # Instance ids come from a pool of random bytes read ahead; a forked child must not reuse it.
    import os

    from workflow_core.local import _uuid4  # pyright: ignore[reportPrivateUsage]

    _uuid4()  # the pool is filled now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, _uuid4().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 100).decode()
    os.close(read)
    assert len(from_child) == 36
    assert from_child != _uuid4()
