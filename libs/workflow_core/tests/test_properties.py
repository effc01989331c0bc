"""Property-based tests over random valid graphs, driving the pure engine to the end.

Whatever the graph and whatever the workers do: the engine terminates, never dispatches the same
(job, attempt) twice, and a completed instance leaves no open task or timer behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
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


@st.composite
def chains(draw: st.DrawFn) -> dict[str, Any]:
    """Graphs built on a line of mostly machine steps (the shortcut's case: a step followed by one
    machine step), with a few more edges for forks, joins, choices and a loop."""
    size = draw(st.integers(min_value=3, max_value=10))
    kinds = [draw(st.sampled_from(["machine"] * 8 + KINDS)) for _ in range(size)]
    kinds[-1] = draw(st.sampled_from(["machine", "human", "timer"]))
    pairs = [(i, i + 1) for i in range(size - 1)]
    pairs += draw(
        st.lists(
            st.tuples(st.integers(0, size - 2), st.integers(1, size - 1)).filter(lambda p: p[0] < p[1]),
            max_size=2,
        )
    )
    edges: list[dict[str, Any]] = []
    for source, target in dict.fromkeys(pairs):
        edge: dict[str, Any] = {"source": f"n{source}", "target": f"n{target}"}
        condition = draw(st.sampled_from([None] * 8 + CONDITIONS))
        if condition is not None and kinds[source] != "parallel_gateway":
            edge["condition"] = condition
        edges.append(edge)
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
        steps[f"n{index}"] = node
    if draw(st.booleans()):
        steps["n1"]["max_visits"] = 2
        edges.append({"source": f"n{size - 1}", "target": "n1", "condition": "x"})
    return {"name": "chains", "version": "1.0.0", "steps": steps, "edges": edges}


class _GeneralOnly(WorkflowMachine):
    """The machine without its shortcuts for starts and chained steps: every event takes the
    general path."""

    def _started(self, state: InstanceState, at: datetime) -> None:
        return None

    def _chained(self, state: InstanceState, event: StepCompleted) -> None:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    graph=chains(),
    x=st.booleans(),
    y=st.booleans(),
    outcomes=st.lists(
        st.sampled_from(["ok", "ok", "ok", "ok", "ok", "twice", "retryable", "fatal"]),
        min_size=64,
        max_size=64,
    ),
    default_timeout=st.sampled_from([None, 30.0]),
    in_place=st.booleans(),
)
def test_the_shortcuts_for_starts_and_chained_steps_give_what_the_general_path_gives(
    graph: dict[str, Any],
    x: bool,
    y: bool,
    outcomes: list[str],
    default_timeout: float | None,
    in_place: bool,
) -> None:
    definition = load_definition(graph)
    fast = WorkflowMachine.for_definition(definition, default_timeout=default_timeout)
    general = _GeneralOnly.for_definition(definition, default_timeout=default_timeout)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    started = Started(at=now, instance_id="p-1", input={"x": x, "y": y})
    first = fast.apply(None, started)
    first_general = general.apply(None, started)
    assert msgspec.json.encode(first) == msgspec.json.encode(first_general)
    fast_state, general_state = first.state, first_general.state
    queue: list[Event] = []
    open_timers: dict[str, datetime] = {}
    outcome = iter(outcomes * 50)

    def absorb(commands: list[Any]) -> None:
        for command in commands:
            if isinstance(command, DispatchJob):
                kind = next(outcome)
                if kind in ("ok", "twice"):
                    done = StepCompleted(
                        at=now,
                        job_id=command.job_id,
                        attempt=command.attempt,
                        output={"seen": True},
                        worker="w-1",
                    )
                    queue.extend([done, done] if kind == "twice" else [done])
                else:
                    error = StepError(type="Boom", retryable=kind == "retryable")
                    queue.append(
                        StepFailed(at=now, job_id=command.job_id, attempt=command.attempt, error=error)
                    )
            elif isinstance(command, CreateTask):
                queue.append(TaskCompleted(at=now, task_id=command.task_id, data={}))
            elif isinstance(command, StartTimer):
                open_timers[command.timer_id] = command.due_at
            elif isinstance(command, CancelTimer):
                open_timers.pop(command.timer_id, None)

    absorb(first.commands)
    for _ in range(1000):
        if not queue and open_timers:
            timer_id, due = min(open_timers.items(), key=lambda item: item[1])
            del open_timers[timer_id]
            now = max(now, due)
            queue.append(TimerFired(at=now, timer_id=timer_id))
        if not queue:
            break
        event = msgspec.structs.replace(queue.pop(0), at=now)
        now += timedelta(seconds=1)
        fast_result = fast.apply(fast_state, event, in_place=in_place)
        general_result = general.apply(general_state, event, in_place=in_place)
        assert msgspec.json.encode(fast_result) == msgspec.json.encode(general_result)
        fast_state, general_state = fast_result.state, general_result.state
        absorb(fast_result.commands)
    else:
        raise AssertionError("the engine did not come to rest within 1000 events")


def test_a_chain_of_machine_steps_takes_the_shortcuts() -> None:
    """The comparison above would pass without the shortcuts: check they are taken where meant to be."""
    definition = load_definition(
        {
            "name": "chain",
            "version": "1.0.0",
            "steps": {"a": {"type": "machine", "step_type": "t"}, "b": {"type": "machine", "step_type": "t"}},
            "edges": [{"source": "a", "target": "b"}],
        }
    )
    machine = WorkflowMachine.for_definition(definition)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = machine.apply(None, Started(at=now, instance_id="p-1"))
    job = first.commands[0]
    assert isinstance(job, DispatchJob)
    done = StepCompleted(at=now, job_id=job.job_id, attempt=1)
    assert machine._chained(first.state, done) is not None  # pyright: ignore[reportPrivateUsage]
    fresh = machine.apply(None, Started(at=now, instance_id="p-2")).state
    assert machine._started(fresh, now) is not None  # pyright: ignore[reportPrivateUsage]
