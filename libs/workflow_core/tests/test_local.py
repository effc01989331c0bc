"""LocalEngine specifics: real retries with backoff, bounded memory, errors of step code."""

from __future__ import annotations

import time

from workflow_core import (
    BaseMachineStep,
    InstanceNotFoundError,
    InstanceStatus,
    LocalEngine,
    RetryableStepError,
    RetryPolicy,
    WorkflowContext,
    WorkflowDefinition,
    load_definition,
)


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
