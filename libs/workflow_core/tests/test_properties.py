"""Property-based tests over random valid graphs, driving the pure engine to the end.

Whatever the graph and whatever the workers do: the engine terminates, never dispatches the same
(job, attempt) twice, and a completed instance leaves no open task or timer behind.
"""

from __future__ import annotations

from collections.abc import Iterator
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


class _World:
    """What the engine's commands cause, simulated: each job ends as the next of ``outcomes`` says
    (``twice``: its completion arrives twice), each task is completed, and when nothing else is
    left the earliest timer fires. :meth:`events` hands the events over, at most 1,000, stamped
    with the clock when handed over if ``restamp`` (else with the clock when caused)."""

    def __init__(
        self,
        outcomes: list[str],
        now: datetime,
        *,
        worker: str | None = None,
        dispatch_once: bool = False,
        restamp: bool = False,
    ) -> None:
        self.now = now
        self.worker = worker
        self.dispatch_once = dispatch_once
        self.restamp = restamp
        self.queue: list[Event] = []
        self.open_tasks: set[str] = set()
        self.open_timers: dict[str, datetime] = {}
        self._dispatched: set[tuple[str, int]] = set()
        self._outcome = iter(outcomes * 50)

    def absorb(self, commands: list[Any]) -> None:
        now = self.now
        for command in commands:
            if isinstance(command, DispatchJob):
                if self.dispatch_once:
                    key = (command.job_id, command.attempt)
                    assert key not in self._dispatched, f"dispatched twice: {key}"
                    self._dispatched.add(key)
                kind = next(self._outcome)
                if kind in ("ok", "twice"):
                    done = StepCompleted(
                        at=now,
                        job_id=command.job_id,
                        attempt=command.attempt,
                        output={"seen": True},
                        worker=self.worker,
                    )
                    self.queue.extend([done, done] if kind == "twice" else [done])
                else:
                    error = StepError(type="Boom", retryable=kind == "retryable")
                    self.queue.append(
                        StepFailed(at=now, job_id=command.job_id, attempt=command.attempt, error=error)
                    )
            elif isinstance(command, CreateTask):
                self.open_tasks.add(command.task_id)
                self.queue.append(TaskCompleted(at=now, task_id=command.task_id, data={}))
            elif isinstance(command, CancelTask):
                self.open_tasks.discard(command.task_id)
            elif isinstance(command, StartTimer):
                self.open_timers[command.timer_id] = command.due_at
            elif isinstance(command, CancelTimer):
                self.open_timers.pop(command.timer_id, None)

    def events(self) -> Iterator[Event]:
        """The next event until none is left; the clock moves a second with each."""
        for _ in range(1000):
            if not self.queue and self.open_timers:
                timer_id, due = min(self.open_timers.items(), key=lambda item: item[1])
                del self.open_timers[timer_id]
                self.now = max(self.now, due)
                self.queue.append(TimerFired(at=self.now, timer_id=timer_id))
            if not self.queue:
                return
            event = self.queue.pop(0)
            if isinstance(event, TaskCompleted):
                self.open_tasks.discard(event.task_id)
            if self.restamp:
                event = msgspec.structs.replace(event, at=self.now)
            self.now += timedelta(seconds=1)  # before the event is applied: what it causes is later
            yield event
        raise AssertionError("the engine did not come to rest within 1000 events")


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
    world = _World(outcomes, datetime(2026, 1, 1, tzinfo=UTC), dispatch_once=True)
    result = machine.apply(None, Started(at=world.now, instance_id="p-1", input={"x": x, "y": y}))
    state: InstanceState = result.state
    world.absorb(result.commands)
    for event in world.events():
        result = machine.apply(state, event)
        state = result.state
        world.absorb(result.commands)

    assert state.status in (InstanceStatus.COMPLETED, InstanceStatus.FAILED), state.status
    if state.status is InstanceStatus.COMPLETED:
        assert not world.open_tasks
        assert not world.open_timers
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
    world = _World(outcomes, datetime(2026, 1, 1, tzinfo=UTC), worker="w-1", restamp=True)
    started = Started(at=world.now, instance_id="p-1", input={"x": x, "y": y})
    first = fast.apply(None, started)
    first_general = general.apply(None, started)
    assert msgspec.json.encode(first) == msgspec.json.encode(first_general)
    fast_state, general_state = first.state, first_general.state
    world.absorb(first.commands)
    for event in world.events():
        fast_result = fast.apply(fast_state, event, in_place=in_place)
        general_result = general.apply(general_state, event, in_place=in_place)
        assert msgspec.json.encode(fast_result) == msgspec.json.encode(general_result)
        fast_state, general_state = fast_result.state, general_result.state
        world.absorb(fast_result.commands)


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
