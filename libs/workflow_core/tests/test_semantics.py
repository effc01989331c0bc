"""BPMN sequence-flow semantics, run on LocalEngine with real (fast) steps."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_core import (
    BaseHumanStep,
    BaseMachineStep,
    ConditionalGroup,
    Edge,
    ExclusiveGateway,
    InclusiveGateway,
    InstanceStatus,
    LocalEngine,
    ParallelGateway,
    ParallelGroup,
    SequentialGroup,
    TimerStep,
    WaitForSignalStep,
    WorkflowContext,
    WorkflowDefinition,
)
from workflow_core.testing import RecordingStep as Record


def rec(name: str, **options: Any) -> Record:
    return Record(name=name, **options)


def define(steps: dict[str, Any], edges: list[Edge], **kwargs: Any) -> WorkflowDefinition:
    return WorkflowDefinition("flow", "1.0.0", steps=steps, edges=edges, **kwargs)


async def run(definition: WorkflowDefinition, data: dict[str, Any] | None = None) -> tuple[LocalEngine, Any]:
    Record.log.clear()
    engine = LocalEngine()
    instance = await engine.start(definition, input=data or {})
    await engine.run_until_idle(timeout=10)
    return engine, engine.get(instance.id)


async def test_linear_flow_runs_every_step_in_order() -> None:
    definition = define({"a": rec("a"), "b": rec("b"), "c": rec("c")}, [Edge("a", "b"), Edge("b", "c")])
    _, state = await run(definition)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["trail"] == ["a", "b", "c"]


async def test_unconditional_edges_out_of_a_plain_step_are_parallel_branches_and_the_join_runs_once() -> None:
    definition = define(
        {"a": rec("a"), "b": rec("b"), "c": rec("c"), "d": rec("d")},
        [Edge("a", "b"), Edge("a", "c"), Edge("b", "d"), Edge("c", "d")],
    )
    _, state = await run(definition)
    assert state.status is InstanceStatus.COMPLETED
    trail = Record.log
    assert trail[0] == "a" and trail[-1] == "d"
    assert trail.count("d") == 1
    assert sorted(trail[1:3]) == ["b", "c"]


async def test_parallel_gateway_fork_and_join_waits_for_both_branches() -> None:
    class Slow(BaseMachineStep):
        name = "slow"

        async def execute(self, context: WorkflowContext) -> None:
            import asyncio

            await asyncio.sleep(0.05)
            context.set("slow_done", True)

    class Join(BaseMachineStep):
        name = "join"

        async def execute(self, context: WorkflowContext) -> None:
            context.set("saw_slow", context.get("slow_done", False))
            context.set("joined", int(context.get("joined", 0)) + 1)

    definition = define(
        {"fork": ParallelGateway(name="fork"), "slow": Slow, "fast": rec("fast"), "join": Join},
        [Edge("fork", "slow"), Edge("fork", "fast"), Edge("slow", "join"), Edge("fast", "join")],
    )
    _, state = await run(definition)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["joined"] == 1
    assert state.data["saw_slow"] is True


@pytest.mark.parametrize(("amount", "expected"), [(250, "big"), (50, "small")])
async def test_exclusive_gateway_takes_the_first_edge_that_holds_else_the_default(
    amount: int, expected: str
) -> None:
    definition = define(
        {
            "route": ExclusiveGateway(name="route"),
            "big": rec("big"),
            "small": rec("small"),
            "huge": rec("huge"),
        },
        [
            Edge("route", "big", condition="amount > 100"),
            Edge("route", "huge", condition="amount > 200"),
            Edge("route", "small", default=True),
        ],
    )
    _, state = await run(definition, {"amount": amount})
    assert state.data["trail"] == [expected]


async def test_exclusive_gateway_without_a_match_or_default_raises_an_incident() -> None:
    definition = define(
        {"route": ExclusiveGateway(name="route"), "big": rec("big")},
        [Edge("route", "big", condition="amount > 100")],
    )
    _, state = await run(definition, {"amount": 1})
    assert state.status is InstanceStatus.FAILED
    assert state.incidents[0].kind == "no_path"
    assert state.incidents[0].node == "route"


async def test_inclusive_gateway_takes_every_edge_that_holds_and_the_join_waits_only_for_those() -> None:
    definition = define(
        {
            "split": InclusiveGateway(name="split"),
            "x": rec("x"),
            "y": rec("y"),
            "z": rec("z"),
            "merge": rec("merge"),
        },
        [
            Edge("split", "x", condition="a"),
            Edge("split", "y", condition="b"),
            Edge("split", "z", condition="c"),
            Edge("x", "merge"),
            Edge("y", "merge"),
            Edge("z", "merge"),
        ],
    )
    _, state = await run(definition, {"a": True, "b": False, "c": True})
    assert state.status is InstanceStatus.COMPLETED
    assert sorted(Record.log[:2]) == ["x", "z"]
    assert Record.log[2:] == ["merge"]


async def test_inclusive_gateway_falls_back_to_its_default() -> None:
    definition = define(
        {"split": InclusiveGateway(name="split"), "x": rec("x"), "other": rec("other")},
        [Edge("split", "x", condition="a"), Edge("split", "other", default=True)],
    )
    _, state = await run(definition, {"a": False})
    assert state.data["trail"] == ["other"]


async def test_default_edge_of_a_plain_step_only_when_no_conditional_edge_held() -> None:
    steps = {"a": rec("a"), "b": rec("b"), "c": rec("c"), "d": rec("d")}
    edges = [
        Edge("a", "b", condition="x > 1"),
        Edge("a", "c", condition="x > 2"),
        Edge("a", "d", default=True),
    ]
    _, state = await run(define(steps, edges), {"x": 3})
    assert sorted(Record.log) == ["a", "b", "c"]
    _, state = await run(define(steps, edges), {"x": 0})
    assert state.data["trail"] == ["a", "d"]


async def test_all_conditional_edges_false_without_default_raises_an_incident() -> None:
    definition = define({"a": rec("a"), "b": rec("b")}, [Edge("a", "b", condition="x > 1")])
    _, state = await run(definition, {"x": 0})
    assert state.status is InstanceStatus.FAILED
    assert state.incidents[0].kind == "no_path"


async def test_a_condition_on_a_missing_variable_is_an_incident_not_a_silent_false() -> None:
    definition = define({"a": rec("a"), "b": rec("b")}, [Edge("a", "b", condition="missing > 1")])
    _, state = await run(definition, {})
    assert state.status is InstanceStatus.FAILED
    assert state.incidents[0].kind == "expression"


async def test_bounded_loop_runs_until_its_condition_and_its_bound_stops_a_runaway() -> None:
    class Count(BaseMachineStep):
        name = "count"
        max_visits = 5

        async def execute(self, context: WorkflowContext) -> None:
            context.set("n", int(context.get("n", 0)) + 1)

    steps = {"count": Count, "check": ExclusiveGateway(name="check"), "done": rec("done")}
    edges = [
        Edge("count", "check"),
        Edge("check", "count", condition="n < limit"),
        Edge("check", "done", default=True),
    ]
    _, state = await run(define(steps, edges, start=["count"]), {"limit": 3})
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["n"] == 3
    _, state = await run(define(steps, edges, start=["count"]), {"limit": 100})
    assert state.status is InstanceStatus.FAILED
    assert state.data["n"] == 5
    assert state.incidents[0].kind == "loop_bound"


async def test_groups_sequential_parallel_and_conditional_nest_as_nodes() -> None:
    pipeline = SequentialGroup(
        name="pipeline",
        steps=[
            rec("first"),
            ParallelGroup(name="both", steps=[rec("left"), rec("right")]),
            ConditionalGroup(
                name="choose",
                branches=[("amount > 100", rec("big")), ("amount > 10", rec("medium"))],
                default=rec("small"),
            ),
        ],
    )
    definition = define(
        {"start": rec("start"), "pipeline": pipeline, "end": rec("end")},
        [Edge("start", "pipeline"), Edge("pipeline", "end")],
    )
    _, state = await run(definition, {"amount": 50})
    assert state.status is InstanceStatus.COMPLETED
    trail = Record.log
    assert trail[:2] == ["start", "pipeline/first"]
    assert sorted(trail[2:4]) == ["pipeline/both/left", "pipeline/both/right"]
    assert trail[4:] == ["pipeline/choose/medium", "end"]


async def test_a_terminal_human_step_completes_the_instance_when_done() -> None:
    class Approve(BaseHumanStep):
        name = "approve"
        title = "Approve"
        form_schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    engine, state = await run(define({"a": rec("a"), "approve": Approve}, [Edge("a", "approve")]))
    assert state.status is InstanceStatus.WAITING
    (task,) = engine.open_tasks(state.id)
    await engine.complete_task(task.id, data={"ok": True}, user="u1")
    assert engine.get(state.id).status is InstanceStatus.COMPLETED


async def test_timer_step_waits_then_continues() -> None:
    definition = define(
        {"wait": TimerStep(name="wait", duration=0.05), "after": rec("after")}, [Edge("wait", "after")]
    )
    engine = LocalEngine()
    instance = await engine.start(definition)
    await engine.run_until_idle(timeout=5)
    assert engine.get(instance.id).status is InstanceStatus.WAITING
    import asyncio

    for _ in range(100):
        await asyncio.sleep(0.01)
        if engine.get(instance.id).status is not InstanceStatus.WAITING:
            break
    await engine.run_until_idle(timeout=5)
    assert engine.get(instance.id).status is InstanceStatus.COMPLETED
    assert engine.get(instance.id).data["trail"] == ["after"]


async def test_signal_resumes_a_waiting_step_and_an_early_signal_is_kept() -> None:
    definition = define(
        {
            "a": rec("a"),
            "paid": WaitForSignalStep(name="paid", signal="payment_received"),
            "ship": rec("ship"),
        },
        [Edge("a", "paid"), Edge("paid", "ship")],
    )
    engine = LocalEngine()
    instance = await engine.start(definition)
    await engine.run_until_idle()
    assert engine.get(instance.id).status is InstanceStatus.WAITING
    await engine.signal(instance.id, "payment_received", data={"paid": 42})
    await engine.run_until_idle()
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["paid"] == 42
    assert state.data["trail"] == ["a", "ship"]


async def test_a_signal_that_arrives_before_the_wait_is_consumed_when_the_step_is_reached() -> None:
    class Gate(BaseHumanStep):
        name = "gate"
        title = "Gate"

    definition = define(
        {"gate": Gate, "paid": WaitForSignalStep(name="paid", signal="go"), "x": rec("x")},
        [Edge("gate", "paid"), Edge("paid", "x")],
    )
    engine = LocalEngine()
    instance = await engine.start(definition)
    await engine.signal(instance.id, "go", data={"early": True})
    (task,) = engine.open_tasks(instance.id)
    await engine.complete_task(task.id, data={})
    await engine.run_until_idle()
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert state.data["early"] is True


async def test_cancel_withdraws_open_tasks_and_drops_late_results() -> None:
    import asyncio

    release = asyncio.Event()

    class Blocked(BaseMachineStep):
        name = "blocked"

        async def execute(self, context: WorkflowContext) -> None:
            await release.wait()
            context.set("late", True)

    class Ask(BaseHumanStep):
        name = "ask"
        title = "Ask"

    definition = define(
        {"fork": ParallelGateway(name="fork"), "blocked": Blocked, "ask": Ask},
        [Edge("fork", "blocked"), Edge("fork", "ask")],
    )
    engine = LocalEngine()
    instance = await engine.start(definition)
    await asyncio.sleep(0)
    assert len(engine.open_tasks(instance.id)) == 1
    await engine.cancel(instance.id, reason="customer left")
    assert engine.get(instance.id).status is InstanceStatus.CANCELLED
    assert engine.open_tasks(instance.id) == []
    release.set()
    await engine.run_until_idle(timeout=5)
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.CANCELLED
    assert "late" not in state.data
    assert state.cancel_reason == "customer left"


async def test_error_edge_routes_a_failed_machine_step_to_a_person() -> None:
    from workflow_core import RetryPolicy, StepFailedError

    class Charge(BaseMachineStep):
        name = "charge"
        retry = RetryPolicy(max_attempts=1)

        async def execute(self, context: WorkflowContext) -> None:
            raise StepFailedError("card declined", retryable=False, type="CardDeclined")

    class Review(BaseHumanStep):
        name = "review"
        title = "Review"

    definition = define({"charge": Charge, "review": Review}, [Edge("charge", "review", on_error=True)])
    engine, state = await run(definition)
    assert state.status is InstanceStatus.WAITING
    assert state.data["last_error"] == {"step": "charge", "type": "CardDeclined", "message": "card declined"}
    assert len(engine.open_tasks(state.id)) == 1
