"""The pure engine: (definition, state, event) -> (state, commands), with time from events."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from workflow_core import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    EngineError,
    InstanceStatus,
    NoIncidentError,
    RetryPolicy,
    TaskDataInvalidError,
    WorkflowDefinition,
    WorkflowMachine,
)
from workflow_core.models import (
    CancelRequested,
    CancelTask,
    CompleteInstance,
    CreateTask,
    DispatchJob,
    FailInstance,
    RaiseIncident,
    RetryRequested,
    Started,
    StartTimer,
    StepCompleted,
    StepError,
    StepFailed,
    TaskCompleted,
    TimerFired,
    TimerKind,
)
from workflow_core.testing import FakeClock as Clock


class Charge(BaseMachineStep):
    name = "charge"
    step_type = "payments.charge"
    retry = RetryPolicy(
        max_attempts=3, backoff="exponential", initial_interval=2, multiplier=3, max_interval=5
    )
    timeout = 30


class Review(BaseHumanStep):
    name = "review"
    title = "Review"
    form_schema = {
        "type": "object",
        "properties": {
            "approved": {"type": "boolean"},
            "note": {"type": "string", "maxLength": 5},
            "score": {"type": "integer", "minimum": 1},
        },
        "required": ["approved", "score"],
    }


def machine(definition: WorkflowDefinition) -> WorkflowMachine:
    return WorkflowMachine.for_definition(definition)


def one_step() -> WorkflowDefinition:
    return WorkflowDefinition("pay", "1.0.0", steps={"charge": Charge})


def test_start_dispatches_the_first_job_with_input_attempt_and_deadline(clock: Clock) -> None:
    at = clock()
    result = machine(one_step()).apply(None, Started(at=at, instance_id="i-1", input={"amount": 5}))
    dispatch = [c for c in result.commands if isinstance(c, DispatchJob)]
    assert len(dispatch) == 1
    job = dispatch[0]
    assert (job.step, job.step_type, job.attempt, job.input) == (
        "charge",
        "payments.charge",
        1,
        {"amount": 5},
    )
    assert job.deadline == at + timedelta(seconds=30)
    timers = [c for c in result.commands if isinstance(c, StartTimer)]
    assert [t.kind for t in timers] == [TimerKind.DEADLINE]
    assert result.state.status is InstanceStatus.RUNNING


def test_ids_are_deterministic_for_the_same_events(clock: Clock) -> None:
    at = clock()
    first = machine(one_step()).apply(None, Started(at=at, instance_id="i-1"))
    again = machine(one_step()).apply(None, Started(at=at, instance_id="i-1"))
    assert first.commands == again.commands


def test_ids_are_uuid5_of_the_instance_kind_and_counter(clock: Clock) -> None:
    # The orchestrator stores these ids: they must stay what every earlier version made.
    result = machine(one_step()).apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    timer = next(c for c in result.commands if isinstance(c, StartTimer))
    assert job.job_id == "4aa16ef9-72aa-55be-9ef0-b09c1c73ea5b"  # uuid5(namespace, "i-1/job/1")
    assert timer.timer_id == "1ff5f414-f915-5320-9a74-9a69e3e89af7"  # uuid5(namespace, "i-1/timer/2")


def test_the_given_state_is_not_modified(clock: Clock) -> None:
    m = machine(one_step())
    start = m.apply(None, Started(at=clock(), instance_id="i-1", input={"amount": 5}))
    job = next(c for c in start.commands if isinstance(c, DispatchJob))
    before = start.state.data.copy()
    m.apply(start.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=1, output={"charged": True}))
    assert start.state.data == before
    assert start.state.status is InstanceStatus.RUNNING


def test_retryable_failure_is_retried_with_exponential_backoff_then_becomes_an_incident(clock: Clock) -> None:
    m = machine(one_step())
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    state = result.state
    delays: list[float] = []
    for attempt in (1, 2):
        failed_at = clock()
        result = m.apply(
            state,
            StepFailed(
                at=failed_at,
                job_id=job.job_id,
                attempt=attempt,
                error=StepError(type="Timeout", message="slow"),
            ),
        )
        retry_timer = next(
            c for c in result.commands if isinstance(c, StartTimer) and c.kind is TimerKind.RETRY
        )
        delays.append((retry_timer.due_at - failed_at).total_seconds())
        assert result.state.status is InstanceStatus.RUNNING
        result = m.apply(result.state, TimerFired(at=retry_timer.due_at, timer_id=retry_timer.timer_id))
        redispatch = next(c for c in result.commands if isinstance(c, DispatchJob))
        assert redispatch.attempt == attempt + 1
        assert redispatch.job_id == job.job_id  # the idempotency key stays the same across attempts
        state = result.state
    assert delays == [2.0, 5.0]  # 2, then min(2*3, 5)
    result = m.apply(
        state, StepFailed(at=clock(), job_id=job.job_id, attempt=3, error=StepError(type="Timeout"))
    )
    assert result.state.status is InstanceStatus.FAILED
    incident = next(c for c in result.commands if isinstance(c, RaiseIncident)).incident
    assert incident.kind == "step_failed" and incident.node == "charge"
    assert any(isinstance(c, FailInstance) for c in result.commands)

    # retry: a new attempt with a fresh budget, which then succeeds
    result = m.apply(result.state, RetryRequested(at=clock(), data={"card": "new"}))
    redispatch = next(c for c in result.commands if isinstance(c, DispatchJob))
    assert redispatch.attempt == 4
    assert redispatch.input["card"] == "new"
    assert result.state.status is InstanceStatus.RUNNING and not result.state.incidents
    result = m.apply(
        result.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=4, output={"ok": True})
    )
    assert result.state.status is InstanceStatus.COMPLETED


def test_non_retryable_failure_becomes_an_incident_at_once(clock: Clock) -> None:
    m = machine(one_step())
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    result = m.apply(
        result.state,
        StepFailed(
            at=clock(), job_id=job.job_id, attempt=1, error=StepError(type="CardDeclined", retryable=False)
        ),
    )
    assert result.state.status is InstanceStatus.FAILED
    assert not any(isinstance(c, StartTimer) and c.kind is TimerKind.RETRY for c in result.commands)


def test_declared_non_retryable_error_types_are_not_retried(clock: Clock) -> None:
    class Strict(BaseMachineStep):
        name = "strict"
        retry = RetryPolicy(max_attempts=5, non_retryable_errors=["ValueError"])

    m = machine(WorkflowDefinition("s", "1.0.0", steps={"strict": Strict}))
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    result = m.apply(
        result.state, StepFailed(at=clock(), job_id=job.job_id, attempt=1, error=StepError(type="ValueError"))
    )
    assert result.state.status is InstanceStatus.FAILED


def test_duplicate_stale_and_unknown_results_are_ignored(clock: Clock) -> None:
    m = machine(one_step())
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    done = m.apply(result.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=1, output={"n": 1}))
    assert done.state.status is InstanceStatus.COMPLETED
    again = m.apply(done.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=1, output={"n": 2}))
    assert again.ignored == "ended" and again.commands == [] and again.state.data["n"] == 1
    stale = m.apply(result.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=7))
    assert stale.ignored == "stale" and stale.commands == []
    unknown = m.apply(result.state, StepCompleted(at=clock(), job_id="nope", attempt=1))
    assert unknown.ignored == "unknown"


def test_a_step_past_its_deadline_gets_a_new_attempt_and_the_late_result_is_dropped(clock: Clock) -> None:
    m = machine(one_step())
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    deadline = next(c for c in result.commands if isinstance(c, StartTimer))
    result = m.apply(result.state, TimerFired(at=deadline.due_at, timer_id=deadline.timer_id))
    retry = next(c for c in result.commands if isinstance(c, StartTimer) and c.kind is TimerKind.RETRY)
    assert (
        result.state.history[-1].error is not None
        and result.state.history[-1].error.type == "DeadlineExceeded"
    )
    result = m.apply(result.state, TimerFired(at=retry.due_at, timer_id=retry.timer_id))
    assert next(c for c in result.commands if isinstance(c, DispatchJob)).attempt == 2
    late = m.apply(
        result.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=1, output={"late": True})
    )
    assert late.ignored == "stale"


def test_task_data_is_validated_every_error_listed_and_the_task_stays_open(clock: Clock) -> None:
    m = machine(WorkflowDefinition("r", "1.0.0", steps={"review": Review}))
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    task = next(c for c in result.commands if isinstance(c, CreateTask))
    with pytest.raises(TaskDataInvalidError) as caught:
        m.apply(
            result.state,
            TaskCompleted(at=clock(), task_id=task.task_id, data={"approved": "yes", "note": "too long"}),
        )
    paths = sorted(e.path for e in caught.value.errors)
    assert len(paths) == 3
    assert (
        any("approved" in p for p in paths)
        and any("note" in p for p in paths)
        and any("score" in p for p in paths)
    )
    assert result.state.status is InstanceStatus.WAITING
    done = m.apply(
        result.state,
        TaskCompleted(at=clock(), task_id=task.task_id, data={"approved": True, "score": 3}, user="u1"),
    )
    assert done.state.status is InstanceStatus.COMPLETED
    assert any(isinstance(c, CompleteInstance) for c in done.commands)
    assert done.state.history[-1].user == "u1"


def test_cancel_cancels_open_tasks_and_timers(clock: Clock) -> None:
    definition = WorkflowDefinition(
        "c", "1.0.0", steps={"charge": Charge, "review": Review}, start=["charge", "review"]
    )
    m = machine(definition)
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    task = next(c for c in result.commands if isinstance(c, CreateTask))
    deadline = next(c for c in result.commands if isinstance(c, StartTimer))
    result = m.apply(result.state, CancelRequested(at=clock(), reason="stop"))
    assert result.state.status is InstanceStatus.CANCELLED
    assert CancelTask(task_id=task.task_id, reason="stop") in result.commands
    assert any(getattr(c, "timer_id", None) == deadline.timer_id for c in result.commands)
    assert result.state.activations == []


def test_retry_without_incident_is_refused(clock: Clock) -> None:
    m = machine(one_step())
    result = m.apply(None, Started(at=clock(), instance_id="i-1"))
    with pytest.raises(NoIncidentError):
        m.apply(result.state, RetryRequested(at=clock()))


def test_a_running_instance_keeps_its_version(clock: Clock) -> None:
    v1 = WorkflowDefinition("pay", "1.0.0", steps={"charge": Charge})
    v2 = WorkflowDefinition(
        "pay", "2.0.0", steps={"charge": Charge, "review": Review}, edges=[Edge("charge", "review")]
    )
    result = machine(v1).apply(None, Started(at=clock(), instance_id="i-1"))
    assert result.state.version == "1.0.0"
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    # The runtime picks the machine by the state's version, so 2.0.0 never applies to it.
    machines = {"1.0.0": machine(v1), "2.0.0": machine(v2)}
    done = machines[result.state.version].apply(
        result.state, StepCompleted(at=clock(), job_id=job.job_id, attempt=1)
    )
    assert done.state.status is InstanceStatus.COMPLETED
    assert done.state.version == "1.0.0"


def test_state_round_trips_through_json(clock: Clock) -> None:
    import msgspec

    from workflow_core import InstanceState

    m = machine(
        WorkflowDefinition(
            "c", "1.0.0", steps={"charge": Charge, "review": Review}, start=["charge", "review"]
        )
    )
    result = m.apply(None, Started(at=clock(), instance_id="i-1", input={"x": [1, 2]}))
    encoded = msgspec.json.encode(result.state)
    assert msgspec.json.decode(encoded, type=InstanceState) == result.state


def test_sequential_ids_are_the_instance_ids_prefix_and_the_counter(clock: Clock) -> None:
    import uuid

    instance_id = "0f1c2a8e-3b7d-4c4e-9a0b-1d2e3f405162"
    m = WorkflowMachine.for_definition(one_step(), ids="sequential")
    result = m.apply(None, Started(at=clock(), instance_id=instance_id))
    job = next(c for c in result.commands if isinstance(c, DispatchJob))
    timer = next(c for c in result.commands if isinstance(c, StartTimer))
    assert job.job_id == "0f1c2a8e-3b7d-4c4e-9a0b-000000000001"
    assert timer.timer_id == "0f1c2a8e-3b7d-4c4e-9a0b-000000000002"
    assert uuid.UUID(job.job_id).version == 4  # still a UUID string, for anyone who parses it


def test_sequential_ids_read_from_the_table_and_formatted_past_it_agree(clock: Clock) -> None:
    from workflow_core.engine import _make_id  # pyright: ignore[reportPrivateUsage]

    m = WorkflowMachine.for_definition(one_step(), ids="sequential")
    state = m.apply(None, Started(at=clock(), instance_id="0f1c2a8e-3b7d-4c4e-9a0b-1d2e3f405162")).state
    for number in (1, 10, 255, 256, 257, 4096, 2**40):
        assert _make_id(m, state, "job", number) == f"0f1c2a8e-3b7d-4c4e-9a0b-{number:012x}"


def test_sequential_ids_need_a_uuid_instance_id(clock: Clock) -> None:
    m = WorkflowMachine.for_definition(one_step(), ids="sequential")
    with pytest.raises(EngineError, match="UUID instance id"):
        m.apply(None, Started(at=clock(), instance_id="i-1"))


def test_in_place_changes_the_given_state_and_gives_what_a_copy_gives(clock: Clock) -> None:
    m = machine(one_step())
    start = m.apply(None, Started(at=clock(), instance_id="i-1", input={"amount": 5}))
    job = next(c for c in start.commands if isinstance(c, DispatchJob))
    event = StepCompleted(at=clock(), job_id=job.job_id, attempt=1, output={"charged": True})
    copied = m.apply(start.state, event)
    in_place = m.apply(start.state, event, in_place=True)
    assert in_place.state is start.state
    assert in_place == copied
    assert start.state.status is InstanceStatus.COMPLETED


def test_a_refused_event_leaves_an_in_place_state_as_it_was(clock: Clock) -> None:
    definition = WorkflowDefinition("r", "1.0.0", steps={"review": Review})
    m = machine(definition)
    start = m.apply(None, Started(at=clock(), instance_id="i-1"))
    task = next(c for c in start.commands if isinstance(c, CreateTask))
    before = msgspec.json.encode(start.state)
    with pytest.raises(TaskDataInvalidError):
        m.apply(start.state, TaskCompleted(at=clock(), task_id=task.task_id, data={}), in_place=True)
    with pytest.raises(NoIncidentError):
        m.apply(start.state, RetryRequested(at=clock()), in_place=True)
    assert msgspec.json.encode(start.state) == before


def _holds_only_plain_values(field_type: msgspec.inspect.Type) -> bool:
    """Whether a field of this type can hold only values that cannot refer back to a Struct."""
    inspect = msgspec.inspect
    plain = (
        inspect.StrType,
        inspect.IntType,
        inspect.FloatType,
        inspect.BoolType,
        inspect.NoneType,
        inspect.DateTimeType,
        inspect.EnumType,
        inspect.LiteralType,
    )
    if isinstance(field_type, plain):
        return True
    if isinstance(field_type, inspect.UnionType):
        return all(_holds_only_plain_values(t) for t in field_type.types)
    if isinstance(field_type, inspect.StructType):
        return field_type.cls.__struct_config__.gc is False  # itself checked below
    return False


def test_structs_the_cycle_collector_does_not_track_hold_only_plain_values() -> None:
    """``gc=False`` is safe only for a Struct that cannot be part of a reference cycle: a field that
    can hold a container (dict, list, Any) would let one leak."""
    from workflow_core import models

    untracked = [
        cls
        for cls in vars(models).values()
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and cls.__struct_config__.gc is False
    ]
    assert {models.StepRecord, models.Activation} <= set(untracked)
    for cls in untracked:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            assert _holds_only_plain_values(field.type), f"{cls.__name__}.{field.name}"
