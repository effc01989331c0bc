"""Property-based tests over random valid graphs, driving the pure engine to the end.

Whatever the graph and whatever the workers do: the engine terminates, never dispatches the same
(job, attempt) twice, and a completed instance leaves no open task or timer behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflow_core import DefinitionInvalidError, InstanceStatus, WorkflowMachine, load_definition
from workflow_core.models import (
    CancelTask,
    CancelTimer,
    CreateTask,
    DispatchJob,
    Event,
    InstanceState,
    Started,
    StartTimer,
    StepCompleted,
    StepError,
    StepFailed,
    TaskCompleted,
    TimerFired,
)

KINDS = ["machine", "machine", "human", "exclusive_gateway", "parallel_gateway", "inclusive_gateway", "timer"]
CONDITIONS = [None, None, "x", "!x", "y", "x && y"]


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(min_value=2, max_value=8))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(size)]
    kinds[-1] = draw(st.sampled_from(["machine", "human", "timer"]))  # a gateway needs a way out
    edges: list[dict[str, Any]] = []
    for target in range(1, size):
        sources = draw(
            st.sets(st.integers(min_value=0, max_value=target - 1), min_size=1, max_size=min(3, target))
        )
        for source in sorted(sources):
            edge: dict[str, Any] = {"source": f"n{source}", "target": f"n{target}"}
            if kinds[source] != "parallel_gateway":
                condition = draw(st.sampled_from(CONDITIONS))
                if condition is not None:
                    edge["condition"] = condition
            edges.append(edge)
    for index, kind in enumerate(kinds[:-1]):
        if kind.endswith("gateway") and not any(e["source"] == f"n{index}" for e in edges):
            edges.append({"source": f"n{index}", "target": f"n{size - 1}"})
    loop = draw(st.booleans()) and size > 2
    steps: dict[str, Any] = {}
    for index, kind in enumerate(kinds):
        node: dict[str, Any] = {"type": kind}
        if kind == "machine":
            node["step_type"] = "test.step"
            node["retry"] = {"max_attempts": 2, "initial_interval": 1}
        elif kind == "human":
            node["title"] = f"task {index}"
        elif kind == "timer":
            node["duration"] = 5
        if loop and index == 1:
            node["max_visits"] = 2
        steps[f"n{index}"] = node
    if loop:
        edges.append({"source": f"n{size - 1}", "target": "n1", "condition": "x"})
    return {"name": "random", "version": "1.0.0", "steps": steps, "edges": edges}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    graph=graphs(),
    x=st.booleans(),
    y=st.booleans(),
    outcomes=st.lists(st.sampled_from(["ok", "ok", "retryable", "fatal"]), min_size=64, max_size=64),
)
def test_engine_terminates_never_double_dispatches_and_leaves_nothing_open(
    graph: dict[str, Any], x: bool, y: bool, outcomes: list[str]
) -> None:
    try:
        definition = load_definition(graph)
    except DefinitionInvalidError as exc:  # generated graphs are meant to be valid
        raise AssertionError(exc.errors) from exc
    machine = WorkflowMachine.for_definition(definition)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    result = machine.apply(None, Started(at=now, instance_id="p-1", input={"x": x, "y": y}))
    state: InstanceState = result.state
    dispatched: set[tuple[str, int]] = set()
    open_tasks: set[str] = set()
    open_timers: dict[str, datetime] = {}
    queue: list[Event] = []
    outcome = iter(outcomes * 50)

    def absorb(commands: list[Any]) -> None:
        for command in commands:
            if isinstance(command, DispatchJob):
                key = (command.job_id, command.attempt)
                assert key not in dispatched, f"dispatched twice: {key}"
                dispatched.add(key)
                kind = next(outcome)
                if kind == "ok":
                    queue.append(
                        StepCompleted(
                            at=now, job_id=command.job_id, attempt=command.attempt, output={"seen": True}
                        )
                    )
                else:
                    error = StepError(type="Boom", retryable=kind == "retryable")
                    queue.append(
                        StepFailed(at=now, job_id=command.job_id, attempt=command.attempt, error=error)
                    )
            elif isinstance(command, CreateTask):
                open_tasks.add(command.task_id)
                queue.append(TaskCompleted(at=now, task_id=command.task_id, data={}))
            elif isinstance(command, CancelTask):
                open_tasks.discard(command.task_id)
            elif isinstance(command, StartTimer):
                open_timers[command.timer_id] = command.due_at
            elif isinstance(command, CancelTimer):
                open_timers.pop(command.timer_id, None)

    absorb(result.commands)
    for _ in range(1000):
        if not queue and open_timers:
            timer_id, due = min(open_timers.items(), key=lambda item: item[1])
            del open_timers[timer_id]
            now = max(now, due)
            queue.append(TimerFired(at=now, timer_id=timer_id))
        if not queue:
            break
        event = queue.pop(0)
        if isinstance(event, TaskCompleted):
            open_tasks.discard(event.task_id)
        now += timedelta(seconds=1)
        result = machine.apply(state, event)
        state = result.state
        absorb(result.commands)
    else:
        raise AssertionError("the engine did not come to rest within 1000 events")

    assert state.status in (InstanceStatus.COMPLETED, InstanceStatus.FAILED), state.status
    if state.status is InstanceStatus.COMPLETED:
        assert not open_tasks
        assert not open_timers
        assert not state.activations and not state.tokens
    else:
        assert state.incidents
