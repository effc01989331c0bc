"""The pure engine: ``(definition, state, event) -> (state, commands)``.

No I/O and no clock: time comes in with each event (``event.at``); ids are derived from the
instance id and a counter (UUID 5 by default), so replaying the same events gives the same state and
commands.
The orchestrator persists the state and carries out the commands; :class:`~workflow_core.local.LocalEngine`
does the same in memory.

Semantics (BPMN sequence flows):

- Out of a plain step every unconditional edge is taken (several make parallel branches), every
  conditional edge that holds is taken, and the default edge only when no conditional edge held.
  A step whose outgoing edges are all conditional, none holding and no default, raises an incident.
- An exclusive gateway takes the first edge, in order, that holds, else its default, else an
  incident; a parallel gateway takes every edge; an inclusive gateway every edge that holds, else
  its default, else an incident.
- A node with several incoming edges is a join: it fires once no other live token (a running step,
  a waiting task, timer or signal, an incident, or a token waiting at another join) can still reach
  it, consuming every token that arrived. So the step after a fork runs once, after an inclusive
  split it waits only for the branches taken, and after an exclusive split it does not wait at all.
- A node with ``max_visits`` raises an incident when a token would exceed it (loops are bounded).
- A machine step failure is retried by its policy (a retry timer, then a new attempt); a step past
  its deadline is retried the same way (``DeadlineExceeded``); when retries run out, ``on_error``
  edges are taken if the step has any, else an incident opens and the instance is ``failed``
  until it is retried.
- A signal no step waits for is kept until a step waits for it.
- The instance completes when no token and no live step is left; cancel withdraws tasks and timers.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from workflow_core.errors import (
    EngineError,
    InstanceNotActiveError,
    NoIncidentError,
    TaskDataInvalidError,
    ValidationIssue,
)
from workflow_core.expressions import ExpressionError, compile_expression
from workflow_core.forms import validate_form_data
from workflow_core.graph import CompiledGraph, GraphEdge, GraphNode
from workflow_core.models import (
    Activation,
    CancelInstance,
    CancelRequested,
    CancelTask,
    CancelTimer,
    Command,
    CompleteInstance,
    CreateTask,
    DispatchJob,
    EscalateTask,
    Event,
    FailInstance,
    Incident,
    InstanceState,
    InstanceStatus,
    PendingSignal,
    RaiseIncident,
    RetryRequested,
    SignalReceived,
    Started,
    StartTimer,
    StepCompleted,
    StepError,
    StepFailed,
    StepKind,
    StepRecord,
    StepStatus,
    TaskCompleted,
    TimerFired,
    TimerKind,
    Token,
)
from workflow_core.wire import HumanStepSpec, MachineStepSpec, SignalStepSpec, TimerStepSpec

__all__ = [
    "MAX_ACTIVATIONS_PER_EVENT",
    "IdScheme",
    "Transition",
    "WorkflowMachine",
    "backoff_delay",
    "transition",
]

MAX_ACTIVATIONS_PER_EVENT = 10_000
"""A safety net: one event never activates more nodes than this (loops are bounded anyway)."""

# Enum members as module constants. On Python 3.11 reading a member off its Enum class
# (``StepKind.MACHINE``) costs ~0.25 µs, ten times a plain attribute, because ``EnumType`` defines
# ``__getattr__``; an attribute of a plain class still costs twice a module global (3.11 specializes
# global reads, not class attribute reads), and the engine reads several on every step.

_INSTANCE_CANCELLED = InstanceStatus.CANCELLED
_INSTANCE_COMPLETED = InstanceStatus.COMPLETED
_INSTANCE_FAILED = InstanceStatus.FAILED
_INSTANCE_RUNNING = InstanceStatus.RUNNING
_INSTANCE_WAITING = InstanceStatus.WAITING

_KIND_EXCLUSIVE_GATEWAY = StepKind.EXCLUSIVE_GATEWAY
_KIND_HUMAN = StepKind.HUMAN
_KIND_INCLUSIVE_GATEWAY = StepKind.INCLUSIVE_GATEWAY
_KIND_MACHINE = StepKind.MACHINE
_KIND_PARALLEL_GATEWAY = StepKind.PARALLEL_GATEWAY
_KIND_SIGNAL = StepKind.SIGNAL
_KIND_TIMER = StepKind.TIMER

_STEP_CANCELLED = StepStatus.CANCELLED
_STEP_COMPLETED = StepStatus.COMPLETED
_STEP_FAILED = StepStatus.FAILED
_STEP_INCIDENT = StepStatus.INCIDENT
_STEP_RETRY_SCHEDULED = StepStatus.RETRY_SCHEDULED
_STEP_RUNNING = StepStatus.RUNNING
_STEP_WAITING = StepStatus.WAITING

_TIMER_DEADLINE = TimerKind.DEADLINE
_TIMER_RETRY = TimerKind.RETRY
_TIMER_TASK_DUE = TimerKind.TASK_DUE
_TIMER_TIMER = TimerKind.TIMER

_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3b7d-5c4e-9a0b-1d2e3f405162")
_ID_HASH = hashlib.sha1(_ID_NAMESPACE.bytes, usedforsecurity=False)
_ID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""RFC 4122 variant: the top two bits of the 17th hex digit become ``10``."""
_ENDED = (_INSTANCE_COMPLETED, _INSTANCE_CANCELLED)
_CHOICES = (_KIND_EXCLUSIVE_GATEWAY, _KIND_INCLUSIVE_GATEWAY)


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_ID_NAMESPACE, name))``, the same value at a third of the cost: the namespace
    is hashed once and no ``UUID`` object is built (an id is made on every dispatch)."""
    digest = _ID_HASH.copy()
    digest.update(name.encode())
    x = digest.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_ID_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


IdScheme = Literal["uuid5", "sequential"]
"""How a machine makes job, task, timer and incident ids (see :class:`WorkflowMachine`)."""


class Transition(msgspec.Struct, frozen=True):
    """What applying one event gave: the new state, the commands to carry out, and (when the event
    changed nothing) why it was ignored: ``stale``, ``unknown``, ``ended``."""

    # A Struct rather than a frozen dataclass: built on every event, ten times cheaper.

    state: InstanceState
    commands: list[Command]
    ignored: str | None = None


def backoff_delay(spec: MachineStepSpec, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    policy = spec.retry
    if policy.backoff == "fixed":
        return min(policy.initial_interval, policy.max_interval)
    return min(policy.initial_interval * policy.multiplier ** max(attempt - 1, 0), policy.max_interval)


def transition(
    graph: CompiledGraph,
    state: InstanceState | None,
    event: Event,
    *,
    definition: str = "",
    version: str = "",
) -> Transition:
    """Apply ``event`` to ``state`` (``None`` for :class:`Started`); see :class:`WorkflowMachine`."""
    return WorkflowMachine(graph, name=definition, version=version).apply(state, event)


class WorkflowMachine:
    """The state machine of one definition.

    Args:
        graph: The definition's compiled graph (``definition.graph``).
        name: The definition's name, recorded in new states.
        version: The definition's version, recorded in new states.
        default_timeout: Deadline (seconds) of an attempt of a machine step that sets no
            ``timeout``; ``None`` leaves such attempts without one. A distributed runtime sets it so
            that a job nobody reports on (a dead worker, a lost message) is retried.
        ids: ``"uuid5"`` (the default, and what the orchestrator stores): an id is the UUID 5 of
            ``{instance_id}/{kind}/{n}``, ``n`` the instance's counter. ``"sequential"``: the
            instance id's first 24 characters, then ``n`` in 12 hex digits: a UUID string as
            unique as the instance id, at a fifth of the cost. The instance id must then be a
            UUID string. For runtimes that keep no id beyond the process (``LocalEngine``): a
            stored id must keep meaning what it meant, so a durable runtime never switches scheme.
    """

    def __init__(
        self,
        graph: CompiledGraph,
        *,
        name: str,
        version: str,
        default_timeout: float | None = None,
        ids: IdScheme = "uuid5",
    ) -> None:
        self.graph = graph
        self.name = name
        self.version = version
        self.default_timeout = default_timeout
        self.ids: IdScheme = ids
        self._plan = _Plan.of(graph)

    @classmethod
    def for_definition(
        cls, definition: Any, *, default_timeout: float | None = None, ids: IdScheme = "uuid5"
    ) -> WorkflowMachine:
        """The machine of a :class:`~workflow_core.definition.WorkflowDefinition`."""
        return cls(
            definition.graph,
            name=definition.name,
            version=definition.version,
            default_timeout=default_timeout,
            ids=ids,
        )

    def apply(self, state: InstanceState | None, event: Event, *, in_place: bool = False) -> Transition:
        """Apply one event. The given state is not modified (unless ``in_place``); the new state is
        returned.

        ``in_place`` changes the given state and returns it, saving a copy per event: for a caller
        that owns the state and has handed out no reference to it that must stay as it is. An event
        that raises one of the errors below changes nothing either way; only the safety net
        (:data:`MAX_ACTIVATIONS_PER_EVENT`) raises halfway through, leaving such a state partly
        changed.

        Raises:
            TaskDataInvalidError: task data violates the form (nothing changes).
            InstanceNotActiveError: a retry or signal for an instance that already ended.
            NoIncidentError: a retry without an open incident.
            EngineError: a start for an existing state, or another event without one.
        """
        if isinstance(event, Started):
            if state is not None:
                raise EngineError("instance already started")
            if self.ids == "sequential" and not _is_uuid(event.instance_id):
                raise EngineError(f"sequential ids need a UUID instance id, not {event.instance_id!r}")
            state = _new_state(self, event)
            started = self._started(state, event.at)
            if started is not None:
                return started
            return _Run(self, self._plan, state, event.at).start(event)
        if state is None:
            raise EngineError("no state for an instance that was never started")
        if not in_place:
            state = _copy(state)
        if type(event) is StepCompleted:
            chained = self._chained(state, event)
            if chained is not None:
                return chained
        return _Run(self, self._plan, state, event.at).handle(event)

    def _started(self, state: InstanceState, at: datetime) -> Transition | None:
        """A start, in short, when the definition starts with one machine step (``_Plan.first``):
        its first job. Gives what :meth:`_Run.start` gives (a test compares the two); ``None``,
        with nothing changed, for other definitions."""
        first = self._plan.first
        if first is None:
            return None
        commands: list[Command] = []
        state.visits[first.id] = 1
        _dispatch_first(self, state, first, at, commands)
        return Transition(state, commands)  # running since it started, updated when it started

    def _chained(self, state: InstanceState, event: StepCompleted) -> Transition | None:
        """The usual event, in short: the result of a running step whose token goes on to one
        machine step (``_Plan.chain``) or ends there (``_Plan.ends``), in a running instance with
        no token at a join.

        Gives what :meth:`_Run.handle` gives (a test compares the two), without its generality:
        no ``_Run``, no routing, no join scan, and after a chained step the status stays
        ``running`` (the step just dispatched runs; a running instance has no incident).
        ``None``, with nothing changed, for anything else: the general path decides."""
        if state.status is not _INSTANCE_RUNNING or state.tokens:
            return None
        job_id = event.job_id
        for activation in state.activations:
            if activation.job_id == job_id:
                break
        else:
            return None
        if activation.attempt != event.attempt or activation.status is not _STEP_RUNNING:
            return None
        following = self._plan.chain.get(activation.node)
        if following is None and activation.node not in self._plan.ends:
            return None
        at = event.at
        commands: list[Command] = []
        if activation.timer_id is not None:
            commands.append(CancelTimer(timer_id=activation.timer_id))
        if event.output:
            state.data.update(event.output)
        state.activations.remove(activation)
        state.history.append(
            StepRecord(
                node=activation.node,
                kind=_KIND_MACHINE,
                status=_STEP_COMPLETED,
                at=at,
                attempt=activation.attempt,
                job_id=job_id,
                user=event.worker,
            )
        )
        if following is None:  # the token ends here
            _settle(state, _INSTANCE_RUNNING, at, commands)
            return Transition(state, commands)
        state.visits[following.id] = state.visits.get(following.id, 0) + 1
        _dispatch_first(self, state, following, at, commands)
        state.updated_at = at
        return Transition(state, commands)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-definition tables the engine reads on every event, built once per machine."""

    routes: dict[str, list[GraphEdge]]
    """Each node's outgoing edges other than ``on_error`` ones."""
    error_edges: dict[str, list[GraphEdge]]
    """Each node's ``on_error`` edges."""
    static: dict[str, list[str]]
    """Where a token always goes, for nodes whose choice reads no data (a parallel gateway, a plain
    node without conditions): the targets of the edges :meth:`_Run._select` would give, in order."""
    joins: frozenset[str]
    """Nodes with several incoming edges."""
    chain: dict[str, GraphNode]
    """For a node whose token always goes on to one machine step (no join, no ``max_visits``):
    that step. The common case, activated without the general routing (see ``_step_completed``)."""
    ends: frozenset[str]
    """Nodes without outgoing edges (other than ``on_error`` ones): a token ends there."""
    first: GraphNode | None
    """The one node an instance starts at when it is a machine step (no join, no ``max_visits``)."""

    @classmethod
    def of(cls, graph: CompiledGraph) -> _Plan:
        routes: dict[str, list[GraphEdge]] = {}
        error_edges: dict[str, list[GraphEdge]] = {}
        static: dict[str, list[str]] = {}
        for node_id, node in graph.nodes.items():
            outgoing = graph.outgoing.get(node_id, [])
            edges = [e for e in outgoing if not e.on_error]
            routes[node_id] = edges
            error_edges[node_id] = [e for e in outgoing if e.on_error]
            if not edges:
                continue
            if node.kind is _KIND_PARALLEL_GATEWAY:
                static[node_id] = [e.target for e in edges]
            elif node.kind not in _CHOICES and all(e.condition is None for e in edges):
                taken = [e for e in edges if not e.default] or [e for e in edges if e.default]
                static[node_id] = [e.target for e in sorted(taken, key=lambda e: e.index)]
        joins = frozenset(n for n in graph.nodes if graph.is_join(n))
        chain: dict[str, GraphNode] = {}
        for node_id, targets in static.items():
            following = graph.nodes[targets[0]]
            if (
                len(targets) == 1
                and following.id not in joins
                and following.kind is _KIND_MACHINE
                and following.max_visits is None
            ):
                chain[node_id] = following
        ends = frozenset(node_id for node_id, edges in routes.items() if not edges)
        first = graph.nodes[graph.start[0]] if len(graph.start) == 1 else None
        if first is not None and (
            first.id in joins or first.kind is not _KIND_MACHINE or first.max_visits is not None
        ):
            first = None
        return cls(routes, error_edges, static, joins, chain, ends, first)


def _new_state(machine: WorkflowMachine, event: Started) -> InstanceState:
    return InstanceState(
        instance_id=event.instance_id,
        definition=machine.name,
        version=machine.version,
        status=_INSTANCE_RUNNING,
        data=dict(event.input),
        started_at=event.at,
        updated_at=event.at,
        tenant_id=event.tenant_id,
        user_id=event.user_id,
        business_key=event.business_key,
    )


def _is_uuid(text: str) -> bool:
    """Whether ``text`` has the shape of a UUID string (the hyphens where they belong): a sequential
    id keeps its first 24 characters. Cheaper than ``uuid.UUID(text)``; it runs on every start."""
    return len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-"


_TABULATED_COUNTERS = 256
_COUNTER_DIGITS = ["%012x" % number for number in range(_TABULATED_COUNTERS)]  # noqa: UP031
"""The 12 hex digits of a sequential id's counter, for the first 256 ids of an instance (most
instances make fewer). Formatting runs on every step, and ``%``-format's C code is large enough that
most of its cost is instruction-cache misses: a list read has none."""


def _make_id(machine: WorkflowMachine, state: InstanceState, kind: str, number: int) -> str:
    """The id of the instance's ``number``-th thing of ``kind`` (see :class:`WorkflowMachine`)."""
    if machine.ids == "sequential":
        if number < _TABULATED_COUNTERS:
            return state.instance_id[:24] + _COUNTER_DIGITS[number]
        return state.instance_id[:24] + "%012x" % number  # noqa: UP031
    return _uuid5(f"{state.instance_id}/{kind}/{number}")


def _dispatch_first(
    machine: WorkflowMachine, state: InstanceState, node: GraphNode, at: datetime, commands: list[Command]
) -> None:
    """Send the first attempt of machine step ``node``: a new running activation, its job and,
    when it has a deadline, the deadline's timer."""
    # Runs on every step: locals and plain calls rather than helper methods (a third cheaper).
    spec = node.spec
    assert isinstance(spec, MachineStepSpec)
    number = state.seq = state.seq + 1
    job_id = _make_id(machine, state, "job", number)
    timeout = spec.timeout if spec.timeout is not None else machine.default_timeout
    if timeout is None:
        deadline = timer_id = None
    else:
        deadline = at + timedelta(seconds=timeout)
        timer_number = state.seq = state.seq + 1
        timer_id = _make_id(machine, state, "timer", timer_number)
    state.activations.append(
        Activation(
            id=number,
            node=node.id,
            kind=node.kind,
            status=_STEP_RUNNING,
            started_at=at,
            attempt=1,
            job_id=job_id,
            deadline=deadline,
            timer_id=timer_id,
        )
    )
    commands.append(
        DispatchJob(
            job_id=job_id,
            step=node.id,
            step_type=spec.step_type,
            attempt=1,
            input=dict(state.data),
            deadline=deadline,
        )
    )
    if deadline is not None and timer_id is not None:
        commands.append(StartTimer(timer_id=timer_id, kind=_TIMER_DEADLINE, due_at=deadline, step=node.id))


def _copy(state: InstanceState) -> InstanceState:
    # Nested Structs are frozen and replaced, never changed, so copying the containers suffices.
    return msgspec.structs.replace(
        state,
        data=dict(state.data),
        tokens=list(state.tokens),
        activations=list(state.activations),
        visits=dict(state.visits),
        incidents=list(state.incidents),
        history=list(state.history),
        pending_signals=list(state.pending_signals),
    )


class _Run:
    """One event's worth of work on a private copy of the state."""

    # A plain class: a dataclass with ``default_factory=list[...]`` costs ~2 µs per event.
    __slots__ = ("activated", "arrivals", "at", "commands", "graph", "machine", "plan", "state")

    def __init__(self, machine: WorkflowMachine, plan: _Plan, state: InstanceState, at: datetime) -> None:
        self.machine = machine
        self.plan = plan
        self.graph = machine.graph
        self.state = state
        self.at = at
        self.commands: list[Command] = []
        self.arrivals: list[str] = []
        self.activated = 0

    # ------------------------------------------------------------------ entry points

    def start(self, event: Started) -> Transition:
        self.arrivals.extend(self.graph.start)
        return self._finish(previous=None)

    def handle(self, event: Event) -> Transition:
        previous = self.state.status
        if previous in _ENDED:
            if isinstance(event, RetryRequested | SignalReceived):
                raise InstanceNotActiveError(self.state.instance_id, previous.value)
            return Transition(self.state, [], ignored="ended")
        ignored: str | None
        match event:
            case StepCompleted():
                ignored = self._step_completed(event)
            case StepFailed():
                ignored = self._step_failed(event.job_id, event.attempt, event.error, event.worker)
            case TaskCompleted():
                ignored = self._task_completed(event)
            case TimerFired():
                ignored = self._timer_fired(event)
            case SignalReceived():
                ignored = self._signal(event)
            case CancelRequested():
                return self._cancel(event.reason)
            case RetryRequested():
                ignored = self._retry(event)
            case Started():  # handled by WorkflowMachine.apply
                raise EngineError("instance already started")
        if ignored is not None:
            return Transition(self.state, [], ignored=ignored)
        return self._finish(previous=previous)

    # ------------------------------------------------------------------ ids and bookkeeping

    def _next_id(self) -> int:
        self.state.seq += 1
        return self.state.seq

    def _uuid(self, kind: str, number: int) -> str:
        return _make_id(self.machine, self.state, kind, number)

    def _record(self, node: str, kind: StepKind, status: StepStatus, **extra: Any) -> None:
        self.state.history.append(StepRecord(node=node, kind=kind, status=status, at=self.at, **extra))

    def _find(self, **match: Any) -> Activation | None:
        for activation in self.state.activations:
            if all(getattr(activation, k) == v for k, v in match.items()):
                return activation
        return None

    def _replace(self, old: Activation, **changes: Any) -> Activation:
        new = msgspec.structs.replace(old, **changes)
        self.state.activations[self.state.activations.index(old)] = new
        return new

    def _remove(self, activation: Activation) -> None:
        self.state.activations.remove(activation)

    # ------------------------------------------------------------------ events

    def _step_completed(self, event: StepCompleted) -> str | None:
        job_id = event.job_id
        activations = self.state.activations
        for activation in activations:
            if activation.job_id == job_id:
                break
        else:
            return "unknown"
        if activation.attempt != event.attempt or activation.status is not _STEP_RUNNING:
            return "stale"
        if activation.timer_id is not None:
            self.commands.append(CancelTimer(timer_id=activation.timer_id))
        if event.output:
            self.state.data.update(event.output)
        activations.remove(activation)
        self.state.history.append(
            StepRecord(
                node=activation.node,
                kind=_KIND_MACHINE,
                status=_STEP_COMPLETED,
                at=self.at,
                attempt=activation.attempt,
                job_id=job_id,
                user=event.worker,
            )
        )
        following = self.plan.chain.get(activation.node)
        if following is None:
            self._route(activation.node)
            return None
        # What _route, _flow and _activate do for this token, without their generality: one more
        # visit, one more job. The join scan in _finish still runs (another branch may be waiting).
        self.activated += 1
        self.state.visits[following.id] = self.state.visits.get(following.id, 0) + 1
        self._dispatch(following, None, 1)
        return None

    def _step_failed(self, job_id: str, attempt: int, error: StepError, worker: str | None) -> str | None:
        activation = self._find(job_id=job_id)
        if activation is None:
            return "unknown"
        if activation.attempt != attempt or activation.status is not _STEP_RUNNING:
            return "stale"
        node = self.graph.nodes[activation.node]
        spec = node.spec
        assert isinstance(spec, MachineStepSpec)
        self._cancel_timer(activation)
        self._record(
            activation.node,
            _KIND_MACHINE,
            _STEP_FAILED,
            attempt=attempt,
            job_id=job_id,
            error=error,
            user=worker,
        )
        retryable = error.retryable and error.type not in spec.retry.non_retryable_errors
        if retryable and attempt - activation.retry_base < spec.retry.max_attempts:
            timer_id = self._uuid("timer", self._next_id())
            due = self.at + timedelta(seconds=backoff_delay(spec, attempt - activation.retry_base))
            self._replace(activation, status=_STEP_RETRY_SCHEDULED, timer_id=timer_id)
            self.commands.append(
                StartTimer(timer_id=timer_id, kind=_TIMER_RETRY, due_at=due, step=activation.node)
            )
            return None
        error_edges = self.plan.error_edges.get(activation.node)
        if error_edges:
            self._remove(activation)
            self.state.data["last_error"] = {
                "step": activation.node,
                "type": error.type,
                "message": error.message,
            }
            self._take(activation.node, self._select(node, error_edges))
            return None
        self._incident(
            activation,
            kind="step_failed",
            message=f"step {activation.node} failed after {attempt} attempt(s): "
            f"{error.type}: {error.message}",
            error=error,
        )
        return None

    def _task_completed(self, event: TaskCompleted) -> str | None:
        activation = self._find(task_id=event.task_id)
        if activation is None or activation.status is not _STEP_WAITING:
            return "unknown"
        spec = self.graph.nodes[activation.node].spec
        assert isinstance(spec, HumanStepSpec)
        problems = validate_form_data(spec.form_schema, event.data) if spec.form_schema else []
        if problems:
            raise TaskDataInvalidError(
                event.task_id, [ValidationIssue(path=p.path, message=p.message) for p in problems]
            )
        self._cancel_timer(activation)
        self.state.data.update(event.data)
        self._remove(activation)
        self._record(activation.node, _KIND_HUMAN, _STEP_COMPLETED, task_id=event.task_id, user=event.user)
        self._route(activation.node)
        return None

    def _timer_fired(self, event: TimerFired) -> str | None:
        activation = self._find(timer_id=event.timer_id)
        if activation is None:
            return "unknown"
        node = self.graph.nodes[activation.node]
        if activation.kind is _KIND_TIMER:
            self._remove(activation)
            self._record(activation.node, _KIND_TIMER, _STEP_COMPLETED)
            self._route(activation.node)
        elif activation.status is _STEP_RETRY_SCHEDULED:
            self._dispatch(node, self._replace(activation, timer_id=None), activation.attempt + 1)
        elif activation.status is _STEP_RUNNING and activation.kind is _KIND_MACHINE:
            # The attempt's deadline passed: abandon it (its late result is stale) and retry.
            self._replace(activation, timer_id=None)
            current = self._find(id=activation.id)
            assert current is not None and current.job_id is not None
            return self._step_failed(
                current.job_id,
                current.attempt,
                StepError(type="DeadlineExceeded", message="the attempt passed its deadline", retryable=True),
                None,
            )
        elif activation.kind is _KIND_HUMAN and activation.task_id is not None:
            spec = node.spec
            assert isinstance(spec, HumanStepSpec) and spec.escalation is not None
            self._replace(activation, timer_id=None)
            self.commands.append(
                EscalateTask(
                    task_id=activation.task_id,
                    add_candidate_groups=list(spec.escalation.candidate_groups),
                    priority=spec.escalation.priority,
                )
            )
            self._record(activation.node, _KIND_HUMAN, _STEP_WAITING, task_id=activation.task_id)
        else:
            return "stale"
        return None

    def _signal(self, event: SignalReceived) -> str | None:
        waiting = [a for a in self.state.activations if a.kind is _KIND_SIGNAL and a.signal == event.name]
        if not waiting:
            self.state.pending_signals.append(
                PendingSignal(name=event.name, data=dict(event.data), at=self.at)
            )
            return None
        self.state.data.update(event.data)
        for activation in waiting:
            self._remove(activation)
            self._record(activation.node, _KIND_SIGNAL, _STEP_COMPLETED)
            self._route(activation.node)
        return None

    def _cancel(self, reason: str) -> Transition:
        for activation in self.state.activations:
            if activation.task_id is not None and activation.status is _STEP_WAITING:
                self.commands.append(CancelTask(task_id=activation.task_id, reason=reason))
            self._cancel_timer(activation)
            self._record(
                activation.node,
                activation.kind,
                _STEP_CANCELLED,
                attempt=activation.attempt,
                job_id=activation.job_id,
            )
        self.state.activations.clear()
        self.state.tokens.clear()
        self.state.status = _INSTANCE_CANCELLED
        self.state.cancel_reason = reason
        self.state.ended_at = self.at
        self.state.updated_at = self.at
        self.commands.append(CancelInstance(reason=reason))
        return Transition(self.state, self.commands)

    def _retry(self, event: RetryRequested) -> str | None:
        incidents = [i for i in self.state.incidents if event.incident_id in (None, i.id)]
        if not incidents:
            raise NoIncidentError(self.state.instance_id)
        self.state.data.update(event.data)
        for incident in incidents:
            self.state.incidents.remove(incident)
            activation = self._find(id=incident.activation_id)
            if activation is None:
                continue
            node = self.graph.nodes[activation.node]
            self._remove(activation)
            if incident.kind == "step_failed":
                fresh = msgspec.structs.replace(activation, retry_base=activation.attempt, incident_id=None)
                self.state.activations.append(fresh)
                self._dispatch(node, fresh, activation.attempt + 1)
            elif incident.kind == "loop_bound":
                self._activate(node, bypass_bound=True)
            else:
                self._route(node.id)
        return None

    # ------------------------------------------------------------------ routing

    def _route(self, node_id: str) -> None:
        static = self.plan.static.get(node_id)
        if static is not None:
            self.arrivals.extend(static)
            return
        edges = self.plan.routes.get(node_id)
        if not edges:
            return  # the token ends here
        node = self.graph.nodes[node_id]
        selected = self._select(node, edges)
        if selected is not None:
            self._take(node_id, selected)

    def _select(self, node: GraphNode, edges: list[GraphEdge]) -> list[GraphEdge] | None:
        """The edges a token leaves ``node`` by; None when an incident was raised instead."""
        try:
            if node.kind is _KIND_PARALLEL_GATEWAY:
                return edges
            defaults = [e for e in edges if e.default]
            if node.kind is _KIND_EXCLUSIVE_GATEWAY:
                for edge in sorted((e for e in edges if not e.default), key=lambda e: e.index):
                    if edge.condition is None or self._holds(edge.condition):
                        return [edge]
                if defaults:
                    return defaults
                return self._no_path(
                    node, "no outgoing edge of the exclusive gateway holds and it has no default"
                )
            if node.kind is _KIND_INCLUSIVE_GATEWAY:
                taken = [
                    e for e in edges if not e.default and (e.condition is None or self._holds(e.condition))
                ]
                if taken:
                    return taken
                if defaults:
                    return defaults
                return self._no_path(
                    node, "no outgoing edge of the inclusive gateway holds and it has no default"
                )
            unconditional = [e for e in edges if e.condition is None and not e.default]
            held = [e for e in edges if e.condition is not None and self._holds(e.condition)]
            conditional = [e for e in edges if e.condition is not None]
            taken = unconditional + held
            if (conditional and not held) or (not conditional and not unconditional):
                taken += defaults
            if not taken:
                return self._no_path(node, "no outgoing edge holds and there is no default edge")
            return sorted(taken, key=lambda e: e.index)
        except ExpressionError as exc:
            self._incident(self._parked(node), kind="expression", message=str(exc))
            return None

    def _holds(self, condition: str) -> bool:
        return compile_expression(condition).evaluate(self.state.data)

    def _no_path(self, node: GraphNode, message: str) -> None:
        self._incident(self._parked(node), kind="no_path", message=f"at {node.id}: {message}")

    def _parked(self, node: GraphNode) -> Activation:
        """A token that cannot leave ``node`` stays there as a live activation (with its incident)."""
        activation = Activation(
            id=self._next_id(), node=node.id, kind=node.kind, status=_STEP_INCIDENT, started_at=self.at
        )
        self.state.activations.append(activation)
        return activation

    def _take(self, source: str, edges: list[GraphEdge] | None) -> None:
        del source
        for edge in edges or ():
            self.arrivals.append(edge.target)

    # ------------------------------------------------------------------ activation

    def _activate(self, node: GraphNode, *, bypass_bound: bool = False) -> None:
        self.activated += 1
        if self.activated > MAX_ACTIVATIONS_PER_EVENT:
            raise EngineError(f"more than {MAX_ACTIVATIONS_PER_EVENT} steps activated by one event")
        visits = self.state.visits.get(node.id, 0) + 1
        if node.max_visits is not None and visits > node.max_visits and not bypass_bound:
            self._incident(
                self._parked(node),
                kind="loop_bound",
                message=f"step {node.id} would run more than max_visits={node.max_visits} times",
            )
            return
        self.state.visits[node.id] = visits
        spec = node.spec
        if node.kind is _KIND_MACHINE:
            self._dispatch(node, None, 1)
        elif node.kind is _KIND_HUMAN:
            assert isinstance(spec, HumanStepSpec)
            self._open_task(node, spec)
        elif node.kind is _KIND_TIMER:
            assert isinstance(spec, TimerStepSpec)
            number = self._next_id()
            timer_id = self._uuid("timer", number)
            due = (
                self.at + timedelta(seconds=spec.duration)
                if spec.duration is not None
                else datetime.fromisoformat(spec.until or "")
            )
            self.state.activations.append(
                Activation(
                    id=number,
                    node=node.id,
                    kind=node.kind,
                    status=_STEP_WAITING,
                    started_at=self.at,
                    timer_id=timer_id,
                )
            )
            self.commands.append(StartTimer(timer_id=timer_id, kind=_TIMER_TIMER, due_at=due, step=node.id))
        elif node.kind is _KIND_SIGNAL:
            assert isinstance(spec, SignalStepSpec)
            buffered = next((s for s in self.state.pending_signals if s.name == spec.signal), None)
            if buffered is not None:
                self.state.pending_signals.remove(buffered)
                self.state.data.update(buffered.data)
                self._record(node.id, _KIND_SIGNAL, _STEP_COMPLETED)
                self._route(node.id)
            else:
                self.state.activations.append(
                    Activation(
                        id=self._next_id(),
                        node=node.id,
                        kind=node.kind,
                        status=_STEP_WAITING,
                        started_at=self.at,
                        signal=spec.signal,
                    )
                )
        else:  # gateways and pass nodes decide at once
            self._record(node.id, node.kind, _STEP_COMPLETED)
            self._route(node.id)

    def _dispatch(self, node: GraphNode, activation: Activation | None, attempt: int) -> None:
        """Send a job for ``activation`` (``None``: a new one, made here and added running)."""
        if activation is None:
            _dispatch_first(self.machine, self.state, node, self.at, self.commands)
            return
        spec = node.spec
        assert isinstance(spec, MachineStepSpec)
        at = self.at
        job_id = activation.job_id or self._uuid("job", activation.id)
        timeout = spec.timeout if spec.timeout is not None else self.machine.default_timeout
        if timeout is None:
            deadline = timer_id = None
        else:
            deadline = at + timedelta(seconds=timeout)
            timer_id = self._uuid("timer", self._next_id())
        self._replace(
            activation,
            status=_STEP_RUNNING,
            attempt=attempt,
            job_id=job_id,
            deadline=deadline,
            timer_id=timer_id,
        )
        self.commands.append(
            DispatchJob(
                job_id=job_id,
                step=node.id,
                step_type=spec.step_type,
                attempt=attempt,
                input=dict(self.state.data),
                deadline=deadline,
            )
        )
        if deadline is not None and timer_id is not None:
            self.commands.append(
                StartTimer(timer_id=timer_id, kind=_TIMER_DEADLINE, due_at=deadline, step=node.id)
            )

    def _open_task(self, node: GraphNode, spec: HumanStepSpec) -> None:
        number = self._next_id()
        task_id = self._uuid("task", number)
        due = self.at + timedelta(seconds=spec.due_in) if spec.due_in is not None else None
        timer_id = self._uuid("timer", self._next_id()) if due is not None and spec.escalation else None
        self.state.activations.append(
            Activation(
                id=number,
                node=node.id,
                kind=node.kind,
                status=_STEP_WAITING,
                started_at=self.at,
                task_id=task_id,
                timer_id=timer_id,
            )
        )
        fields = spec.context_fields
        snapshot = (
            dict(self.state.data)
            if fields is None
            else {k: self.state.data[k] for k in fields if k in self.state.data}
        )
        self.commands.append(
            CreateTask(
                task_id=task_id,
                step=node.id,
                title=spec.title,
                description=spec.description,
                form_schema=spec.form_schema,
                ui_hints=spec.ui_hints,
                assignee=spec.assignee,
                candidate_users=list(spec.candidate_users),
                candidate_groups=list(spec.candidate_groups),
                priority=spec.priority,
                due_at=due,
                follow_up_at=self.at + timedelta(seconds=spec.follow_up_in) if spec.follow_up_in else None,
                context=snapshot,
            )
        )
        self._record(node.id, _KIND_HUMAN, _STEP_WAITING, task_id=task_id)
        if due is not None and timer_id is not None:
            self.commands.append(
                StartTimer(timer_id=timer_id, kind=_TIMER_TASK_DUE, due_at=due, step=node.id)
            )

    def _cancel_timer(self, activation: Activation) -> None:
        if activation.timer_id is not None:
            self.commands.append(CancelTimer(timer_id=activation.timer_id))

    def _incident(
        self, activation: Activation, *, kind: Any, message: str, error: StepError | None = None
    ) -> None:
        incident = Incident(
            id=self._uuid("incident", self._next_id()),
            node=activation.node,
            activation_id=activation.id,
            kind=kind,
            message=message,
            at=self.at,
            error=error,
        )
        self._replace(activation, status=_STEP_INCIDENT, incident_id=incident.id, timer_id=None)
        self.state.incidents.append(incident)
        self._record(
            activation.node,
            activation.kind,
            _STEP_INCIDENT,
            attempt=activation.attempt,
            job_id=activation.job_id,
            error=error,
        )
        self.commands.append(RaiseIncident(incident=incident))

    # ------------------------------------------------------------------ tokens and joins

    def _flow(self) -> None:
        """Move every arrived token: into its node, or into a join's waiting tokens; fire ready joins."""
        arrivals = self.arrivals
        joins = self.plan.joins
        nodes = self.graph.nodes
        while True:
            while arrivals:
                target = arrivals.pop(0)
                if target in joins:
                    self.state.tokens.append(Token(id=self._next_id(), node=target))
                else:
                    self._activate(nodes[target])
            if not self.state.tokens:
                return  # no token waits at a join: nothing to scan
            ready = self._ready_joins()
            if not ready:
                return
            for join in ready:
                self.state.tokens = [t for t in self.state.tokens if t.node != join]
                self._activate(self.graph.nodes[join])

    def _ready_joins(self) -> list[str]:
        waiting = list(dict.fromkeys(t.node for t in self.state.tokens))
        if not waiting:
            return []
        live = [a.node for a in self.state.activations] + waiting
        ready = [j for j in waiting if not any(j in self.graph.reach[n] for n in live if n != j)]
        if ready:
            return ready[:1]
        if not self.state.activations:
            # Only joins that wait for one another are left (they sit on each other's paths):
            # none can receive more tokens, so the oldest fires rather than deadlock.
            return [self.state.tokens[0].node]
        return []

    # ------------------------------------------------------------------ status

    def _finish(self, previous: InstanceStatus | None) -> Transition:
        state = self.state
        if self.arrivals or state.tokens:  # else _flow has nothing to move (the usual step)
            self._flow()
        _settle(state, previous, self.at, self.commands)
        return Transition(state, self.commands)


def _settle(
    state: InstanceState, previous: InstanceStatus | None, at: datetime, commands: list[Command]
) -> None:
    """Set the status the instance is left in after an event, and say so when it failed or completed."""
    state.updated_at = at
    if state.incidents:
        state.status = _INSTANCE_FAILED
    elif not state.activations and not state.tokens:
        state.status = _INSTANCE_COMPLETED
        state.ended_at = at
    else:
        state.status = _INSTANCE_WAITING
        for a in state.activations:
            if a.kind is _KIND_MACHINE and a.status is not _STEP_INCIDENT:
                state.status = _INSTANCE_RUNNING
                break
    if state.status is _INSTANCE_FAILED and previous is not _INSTANCE_FAILED:
        commands.append(FailInstance(reason=state.incidents[0].message))
    if state.status is _INSTANCE_COMPLETED:
        commands.append(CompleteInstance(data=dict(state.data)))


def active_steps(state: InstanceState) -> list[str]:
    """Node ids with a live activation (running, waiting, retrying or stuck on an incident)."""
    return [a.node for a in state.activations]


def open_task_ids(state: InstanceState) -> Iterable[str]:
    """Ids of the instance's open tasks."""
    return (a.task_id for a in state.activations if a.task_id is not None and a.status is _STEP_WAITING)


def merge_output(data: Mapping[str, Any], output: Mapping[str, Any]) -> dict[str, Any]:
    """How a step's output joins the context: a shallow merge (top-level keys replaced)."""
    merged = dict(data)
    merged.update(output)
    return merged
