"""Steps as Python classes: class attributes define a step, the same class is blueprint and code.

```python
class ChargeCard(BaseMachineStep):
    name = "charge_card"
    step_type = "payments.charge"
    retry = RetryPolicy(max_attempts=5)

    async def execute(self, context: WorkflowContext) -> None:
        context.set("charged", True)
```

Any class with a ``name`` and an ``async execute(context)`` satisfies :class:`Step`; the base
classes add the attributes each kind needs, all with defaults, so no constructor argument is
required. Keyword arguments to a constructor override class attributes for one use
(``ExclusiveGateway(name="route")``). :func:`step_to_spec` / :func:`spec_to_step` convert to and
from the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, cast, runtime_checkable

from workflow_core.wire import (
    DEFAULT_RETRY,
    ConditionalBranchSpec,
    ConditionalGroupSpec,
    EscalationSpec,
    ExclusiveGatewaySpec,
    HumanStepSpec,
    InclusiveGatewaySpec,
    MachineStepSpec,
    NodeSpec,
    ParallelGatewaySpec,
    ParallelGroupSpec,
    RetryPolicySpec,
    SequentialGroupSpec,
    SignalStepSpec,
    TimerStepSpec,
)

if TYPE_CHECKING:
    from workflow_core.context import WorkflowContext

__all__ = [
    "BaseHumanStep",
    "BaseMachineStep",
    "BaseStep",
    "ConditionalGroup",
    "Escalation",
    "ExclusiveGateway",
    "InclusiveGateway",
    "ParallelGateway",
    "ParallelGroup",
    "RetryPolicy",
    "RetryableStepError",
    "SequentialGroup",
    "Step",
    "StepFailedError",
    "StepLike",
    "TimerStep",
    "WaitForSignalStep",
    "as_step",
    "spec_to_step",
    "step_to_spec",
]

RetryPolicy = RetryPolicySpec
"""Retry policy of a machine step: ``RetryPolicy(max_attempts=5, backoff="fixed", initial_interval=2)``."""
Escalation = EscalationSpec
"""What happens to an overdue human task."""


class StepFailedError(Exception):
    """Raised by a step's ``execute`` to fail the attempt with a reported error.

    Args:
        message: What went wrong.
        retryable: Whether the retry policy may try again (``False`` fails the step for good).
        type: The error type reported (defaults to the class name).
    """

    def __init__(self, message: str, *, retryable: bool = False, type: str | None = None) -> None:
        self.message = message
        self.retryable = retryable
        self.type = type or self.__class__.__name__
        super().__init__(message)


class RetryableStepError(StepFailedError):
    """A failure worth retrying (a timeout, a 503): the retry policy decides when and how often."""

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message, retryable=True, type=type)


@runtime_checkable
class Step(Protocol):
    """Anything with a name that can execute against a context is a step."""

    name: str

    async def execute(self, context: WorkflowContext) -> None:
        """Do the step's work, reading and writing ``context``."""
        ...


StepLike: TypeAlias = "BaseStep | type[BaseStep] | Step"
"""A step class or instance, as given to a definition or an edge."""


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class BaseStep:
    """Common ground of every step: a name, a description and an optional loop bound."""

    name: str = ""
    description: str = ""
    max_visits: int | None = None
    """How often this step may run in one instance (required somewhere on every loop)."""

    _options: ClassVar[frozenset[str]] = frozenset({"name", "description", "max_visits"})

    def __init__(self, **options: Any) -> None:
        known: set[str] = set()
        for cls in type(self).__mro__:
            known |= cast("frozenset[str]", getattr(cls, "_options", frozenset[str]()))
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option(s) {', '.join(unknown)}")
        for key, value in options.items():
            setattr(self, key, value)

    async def execute(self, context: WorkflowContext) -> None:
        """Steps that are not machine steps do their work in the engine: nothing to execute."""
        return

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class BaseMachineStep(BaseStep):
    """An automated step. Its ``execute`` runs in a worker subscribed to ``step_type``.

    ``step_type`` is the routing key (dotted lower case, ``payments.charge``); it defaults to the name.
    """

    step_type: str = ""
    retry: RetryPolicySpec = DEFAULT_RETRY
    timeout: float | timedelta | None = None
    non_retryable_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exception types that fail the step for good, whatever the retry policy (worker side)."""

    _options = frozenset({"step_type", "retry", "timeout"})

    @property
    def routing_key(self) -> str:
        """The step type jobs are published under."""
        return self.step_type or self.name

    async def execute(self, context: WorkflowContext) -> None:
        """Do the work. Subclasses override this; a definition loaded from the wire has no code."""
        raise NotImplementedError(
            f"machine step {self.name!r} ({self.routing_key}) has no implementation here"
        )


class BaseHumanStep(BaseStep):
    """A task for a person; the task's data must satisfy ``form_schema`` (JSON Schema 2020-12)."""

    title: str = ""
    form_schema: Mapping[str, Any] = {}
    ui_hints: Mapping[str, Any] = {}
    assignee: str | None = None
    candidate_users: Sequence[str] = ()
    candidate_groups: Sequence[str] = ()
    due_in: float | timedelta | None = None
    follow_up_in: float | timedelta | None = None
    priority: int = 50
    context_fields: Sequence[str] | None = None
    escalation: EscalationSpec | None = None

    _options = frozenset(
        {
            "title",
            "form_schema",
            "ui_hints",
            "assignee",
            "candidate_users",
            "candidate_groups",
            "due_in",
            "follow_up_in",
            "priority",
            "context_fields",
            "escalation",
        }
    )


class ExclusiveGateway(BaseStep):
    """Takes the first outgoing edge (in order) whose condition holds, else its default edge."""


class ParallelGateway(BaseStep):
    """Takes every outgoing edge."""


class InclusiveGateway(BaseStep):
    """Takes every outgoing edge whose condition holds, else its default edge."""


class TimerStep(BaseStep):
    """Waits for ``duration`` (seconds or timedelta) or ``until`` a point in time."""

    duration: float | timedelta | None = None
    until: datetime | str | None = None

    _options = frozenset({"duration", "until"})


class WaitForSignalStep(BaseStep):
    """Waits for the signal named ``signal`` (webhook or message correlation)."""

    signal: str = ""

    _options = frozenset({"signal"})


class SequentialGroup(BaseStep):
    """A node that runs ``steps`` one after the other."""

    steps: Sequence[StepLike] = ()

    _options = frozenset({"steps"})


class ParallelGroup(BaseStep):
    """A node that runs ``steps`` at once and continues when all finished."""

    steps: Sequence[StepLike] = ()

    _options = frozenset({"steps"})


class ConditionalGroup(BaseStep):
    """A node that runs the first of ``branches`` (condition, step) that holds, else ``default``."""

    branches: Sequence[tuple[str, StepLike]] = ()
    default: StepLike | None = None

    _options = frozenset({"branches", "default"})


def as_step(obj: object) -> Any:
    """An instance for a step class or instance (classes need no constructor arguments)."""
    if isinstance(obj, type):
        return obj()
    return obj


def step_to_spec(obj: object, *, name: str | None = None) -> NodeSpec:
    """The wire form of a step class or instance. ``name`` sets the spec's name (group members)."""
    step = as_step(obj)
    label = name if name is not None else (getattr(step, "name", None) or None)
    description = str(getattr(step, "description", "") or "")
    bound = getattr(step, "max_visits", None)
    common: dict[str, Any] = {"name": label, "description": description, "max_visits": bound}
    if isinstance(step, BaseHumanStep):
        return HumanStepSpec(
            **common,
            title=step.title or step.name,
            form_schema=dict(step.form_schema),
            ui_hints=dict(step.ui_hints),
            assignee=step.assignee,
            candidate_users=list(step.candidate_users),
            candidate_groups=list(step.candidate_groups),
            due_in=_seconds(step.due_in),
            follow_up_in=_seconds(step.follow_up_in),
            priority=step.priority,
            context_fields=list(step.context_fields) if step.context_fields is not None else None,
            escalation=step.escalation,
        )
    if isinstance(step, ExclusiveGateway):
        return ExclusiveGatewaySpec(**common)
    if isinstance(step, ParallelGateway):
        return ParallelGatewaySpec(**common)
    if isinstance(step, InclusiveGateway):
        return InclusiveGatewaySpec(**common)
    if isinstance(step, TimerStep):
        until = step.until.isoformat() if isinstance(step.until, datetime) else step.until
        return TimerStepSpec(**common, duration=_seconds(step.duration), until=until)
    if isinstance(step, WaitForSignalStep):
        return SignalStepSpec(**common, signal=step.signal)
    if isinstance(step, SequentialGroup):
        return SequentialGroupSpec(**common, steps=[_member(s) for s in step.steps])
    if isinstance(step, ParallelGroup):
        return ParallelGroupSpec(**common, steps=[_member(s) for s in step.steps])
    if isinstance(step, ConditionalGroup):
        return ConditionalGroupSpec(
            **common,
            branches=[ConditionalBranchSpec(condition=c, step=_member(s)) for c, s in step.branches],
            default=_member(step.default) if step.default is not None else None,
        )
    if isinstance(step, BaseMachineStep):
        # The shared default object lets the wire omit a policy equal to it.
        retry = DEFAULT_RETRY if step.retry == DEFAULT_RETRY else step.retry
        return MachineStepSpec(
            **common, step_type=step.routing_key, retry=retry, timeout=_seconds(step.timeout)
        )
    # Any other object with ``name`` and ``execute`` (the Step protocol) is a machine step.
    return MachineStepSpec(**common, step_type=str(getattr(step, "name", "")))


def _member(obj: object) -> NodeSpec:
    step = as_step(obj)
    return step_to_spec(step, name=str(getattr(step, "name", "")))


class _WireMachineStep(BaseMachineStep):
    """A machine step read from the wire: its code lives in a worker."""


class _WireHumanStep(BaseHumanStep):
    pass


def spec_to_step(spec: NodeSpec, *, key: str) -> BaseStep:
    """A step object for a wire node (machine steps without code: workers run them)."""
    common: dict[str, Any] = {
        "name": spec.name or key,
        "description": spec.description,
        "max_visits": spec.max_visits,
    }
    match spec:
        case MachineStepSpec():
            return _WireMachineStep(
                **common, step_type=spec.step_type, retry=spec.retry, timeout=spec.timeout
            )
        case HumanStepSpec():
            return _WireHumanStep(
                **common,
                title=spec.title,
                form_schema=spec.form_schema,
                ui_hints=spec.ui_hints,
                assignee=spec.assignee,
                candidate_users=tuple(spec.candidate_users),
                candidate_groups=tuple(spec.candidate_groups),
                due_in=spec.due_in,
                follow_up_in=spec.follow_up_in,
                priority=spec.priority,
                context_fields=tuple(spec.context_fields) if spec.context_fields is not None else None,
                escalation=spec.escalation,
            )
        case ExclusiveGatewaySpec():
            return ExclusiveGateway(**common)
        case ParallelGatewaySpec():
            return ParallelGateway(**common)
        case InclusiveGatewaySpec():
            return InclusiveGateway(**common)
        case TimerStepSpec():
            return TimerStep(**common, duration=spec.duration, until=spec.until)
        case SignalStepSpec():
            return WaitForSignalStep(**common, signal=spec.signal)
        case SequentialGroupSpec():
            return SequentialGroup(**common, steps=[spec_to_step(s, key=s.name or "") for s in spec.steps])
        case ParallelGroupSpec():
            return ParallelGroup(**common, steps=[spec_to_step(s, key=s.name or "") for s in spec.steps])
        case ConditionalGroupSpec():
            return ConditionalGroup(
                **common,
                branches=[(b.condition, spec_to_step(b.step, key=b.step.name or "")) for b in spec.branches],
                default=spec_to_step(spec.default, key=spec.default.name or "") if spec.default else None,
            )


def has_code(step: object) -> bool:
    """Whether a machine step object carries an implementation (not one read from the wire)."""
    return not isinstance(step, _WireMachineStep)
