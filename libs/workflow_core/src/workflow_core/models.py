"""Models of running instances: enums, the engine's state, events in and commands out.

All are msgspec Structs (frozen, keyword-only) so that the orchestrator can store the state as JSON
and replay the same events. Times are timezone-aware ``datetime`` values that come in with events:
the engine itself never reads a clock.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "Activation",
    "CancelInstance",
    "CancelRequested",
    "CancelTask",
    "CancelTimer",
    "Command",
    "CompleteInstance",
    "CreateTask",
    "DispatchJob",
    "EscalateTask",
    "Event",
    "FailInstance",
    "Incident",
    "InstanceState",
    "InstanceStatus",
    "PendingSignal",
    "RaiseIncident",
    "RetryRequested",
    "SignalReceived",
    "StartTimer",
    "Started",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "TaskCompleted",
    "TimerFired",
    "TimerKind",
    "Token",
]


class InstanceStatus(enum.StrEnum):
    """Where an instance stands."""

    RUNNING = "running"
    """Machine work is in flight (a job dispatched, or a retry waiting for its backoff)."""
    WAITING = "waiting"
    """Nothing runs: the instance waits on people, timers or signals."""
    COMPLETED = "completed"
    FAILED = "failed"
    """An incident is open; a retry resumes the instance."""
    CANCELLED = "cancelled"


class StepKind(enum.StrEnum):
    """The kinds of node the engine runs (groups are expanded into these)."""

    MACHINE = "machine"
    HUMAN = "human"
    EXCLUSIVE_GATEWAY = "exclusive_gateway"
    PARALLEL_GATEWAY = "parallel_gateway"
    INCLUSIVE_GATEWAY = "inclusive_gateway"
    TIMER = "timer"
    SIGNAL = "signal"
    PASS = "pass"  # noqa: S105 - a node kind, not a password
    """A no-op node: a group's entry or join."""


class StepStatus(enum.StrEnum):
    """How one step activation stands."""

    RUNNING = "running"
    WAITING = "waiting"
    RETRY_SCHEDULED = "retry_scheduled"
    COMPLETED = "completed"
    FAILED = "failed"
    INCIDENT = "incident"
    CANCELLED = "cancelled"


class TimerKind(enum.StrEnum):
    """What a durable timer is for."""

    TIMER = "timer"
    RETRY = "retry"
    DEADLINE = "deadline"
    TASK_DUE = "task_due"


# ``gc=False``: Structs whose fields are plain values (strings, numbers, times, enums, other such
# Structs) cannot be part of a reference cycle, so the cycle collector need not track them. Every
# step makes several (its history record, its activation) and finished instances keep their history:
# untracked, they cost less to make and free, and collections have fewer objects to walk. A field
# that can hold a container (a dict, a list, Any) would make such a Struct unsafe to leave untracked
# (a test checks that none has one).


class StepError(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Why a step attempt failed, as a worker reports it."""

    type: str
    message: str = ""
    retryable: bool = True


# --------------------------------------------------------------------------- state


class Token(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A token that arrived at a join and waits for the others that can still reach it."""

    id: int
    node: str


class Activation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One live execution of a node: a job, a task, a timer or signal wait, or an incident."""

    id: int
    node: str
    kind: StepKind
    status: StepStatus
    started_at: datetime
    attempt: int = 0
    retry_base: int = 0
    """Attempts made before the last manual retry (each manual retry gets a fresh budget)."""
    job_id: str | None = None
    task_id: str | None = None
    timer_id: str | None = None
    deadline: datetime | None = None
    signal: str | None = None
    incident_id: str | None = None
    bypass_bound: bool = False


class Incident(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A problem that stops a branch until someone retries it."""

    id: str
    node: str
    activation_id: int
    kind: Literal["step_failed", "no_path", "expression", "loop_bound"]
    message: str
    at: datetime
    error: StepError | None = None


class StepRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One entry of an instance's step history (an attempt of a step, or a routing decision)."""

    node: str
    kind: StepKind
    status: StepStatus
    at: datetime
    attempt: int = 0
    job_id: str | None = None
    task_id: str | None = None
    user: str | None = None
    error: StepError | None = None


class PendingSignal(msgspec.Struct, frozen=True, kw_only=True):
    """A signal that arrived before any step waited for it (kept until one does)."""

    name: str
    data: dict[str, Any]
    at: datetime


class InstanceState(msgspec.Struct, kw_only=True):
    """Everything the engine knows about one instance; the orchestrator stores it as JSON."""

    instance_id: str
    definition: str
    version: str
    status: InstanceStatus
    data: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    business_key: str | None = None
    tokens: list[Token] = []
    activations: list[Activation] = []
    visits: dict[str, int] = {}
    incidents: list[Incident] = []
    history: list[StepRecord] = []
    pending_signals: list[PendingSignal] = []
    seq: int = 0
    cancel_reason: str | None = None

    @property
    def id(self) -> str:
        """The instance id (same as ``instance_id``)."""
        return self.instance_id

    @property
    def open_incidents(self) -> list[Incident]:
        """The incidents that keep the instance failed."""
        return list(self.incidents)


# --------------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    at: datetime


class Started(_Event, frozen=True, tag="started"):
    """Start a new instance."""

    instance_id: str
    input: dict[str, Any] = {}
    tenant_id: str | None = None
    user_id: str | None = None
    business_key: str | None = None


class StepCompleted(_Event, frozen=True, tag="step_completed"):
    """A worker finished a machine step attempt."""

    job_id: str
    attempt: int
    output: dict[str, Any] = {}
    worker: str | None = None


class StepFailed(_Event, frozen=True, tag="step_failed"):
    """A machine step attempt failed."""

    job_id: str
    attempt: int
    error: StepError
    worker: str | None = None


class TaskCompleted(_Event, frozen=True, tag="task_completed"):
    """A person completed a human task."""

    task_id: str
    data: dict[str, Any] = {}
    user: str | None = None


class TimerFired(_Event, frozen=True, tag="timer_fired"):
    """A durable timer came due."""

    timer_id: str


class SignalReceived(_Event, frozen=True, tag="signal_received"):
    """A signal (webhook, message) reached the instance."""

    name: str
    data: dict[str, Any] = {}


class CancelRequested(_Event, frozen=True, tag="cancel_requested"):
    """Someone cancelled the instance."""

    reason: str = ""


class RetryRequested(_Event, frozen=True, tag="retry_requested"):
    """Retry the open incidents (all, or one), optionally after merging ``data`` into the context."""

    incident_id: str | None = None
    data: dict[str, Any] = {}


Event = (
    Started
    | StepCompleted
    | StepFailed
    | TaskCompleted
    | TimerFired
    | SignalReceived
    | CancelRequested
    | RetryRequested
)

# --------------------------------------------------------------------------- commands


class _Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="command"):
    pass


class DispatchJob(_Command, frozen=True, tag="dispatch_job"):
    """Send a machine step's job to the workers of ``step_type``."""

    job_id: str
    step: str
    step_type: str
    attempt: int
    input: dict[str, Any]
    deadline: datetime | None = None


class CreateTask(_Command, frozen=True, tag="create_task"):
    """Open a human task."""

    task_id: str
    step: str
    title: str
    description: str = ""
    form_schema: dict[str, Any] = {}
    ui_hints: dict[str, Any] = {}
    assignee: str | None = None
    candidate_users: list[str] = []
    candidate_groups: list[str] = []
    priority: int = 50
    due_at: datetime | None = None
    follow_up_at: datetime | None = None
    context: dict[str, Any] = {}


class CancelTask(_Command, frozen=True, tag="cancel_task"):
    """Withdraw an open human task."""

    task_id: str
    reason: str = ""


class EscalateTask(_Command, frozen=True, tag="escalate_task"):
    """A task passed its due date: widen its candidates and/or raise its priority."""

    task_id: str
    add_candidate_groups: list[str] = []
    priority: int | None = None


class StartTimer(_Command, frozen=True, tag="start_timer"):
    """Arm a durable timer; the engine expects :class:`TimerFired` with the same id."""

    timer_id: str
    kind: TimerKind
    due_at: datetime
    step: str


class CancelTimer(_Command, frozen=True, tag="cancel_timer"):
    """Disarm a timer that is no longer needed."""

    timer_id: str


class RaiseIncident(_Command, frozen=True, tag="raise_incident"):
    """Record an incident (the instance is failed until it is retried)."""

    incident: Incident


class CompleteInstance(_Command, frozen=True, tag="complete_instance"):
    """The instance completed: no token is left."""

    data: dict[str, Any]


class FailInstance(_Command, frozen=True, tag="fail_instance"):
    """The instance went from running or waiting to failed (its first open incident)."""

    reason: str


class CancelInstance(_Command, frozen=True, tag="cancel_instance"):
    """The instance was cancelled."""

    reason: str


Command = (
    DispatchJob
    | CreateTask
    | CancelTask
    | EscalateTask
    | StartTimer
    | CancelTimer
    | RaiseIncident
    | CompleteInstance
    | FailInstance
    | CancelInstance
)
