"""LocalEngine: run definitions in-process, on the same pure state machine the orchestrator drives.

For tests, notebooks and small apps: machine steps' ``execute`` runs in this process (as asyncio
tasks), human tasks are kept in memory, timers are real (``loop.call_later``). Nothing is durable.

```python
engine = LocalEngine()
instance = await engine.start(definition, input={"amount": 250})
await engine.run_until_idle()
engine.get(instance.id).status      # InstanceStatus.WAITING
task = engine.open_tasks(instance.id)[0]
await engine.complete_task(task.id, data={"approved": True}, user="user-1")
```

Finished instances are kept only in a bounded window (``keep_finished``; the most recent 1,000 by
default) so a long-running process does not grow without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workflow_core.context import WorkflowContext
from workflow_core.definition import WorkflowDefinition
from workflow_core.engine import WorkflowMachine
from workflow_core.errors import InstanceNotFoundError, UnknownTaskError
from workflow_core.models import (
    CancelRequested,
    CancelTask,
    CancelTimer,
    Command,
    CreateTask,
    DispatchJob,
    EscalateTask,
    Event,
    InstanceState,
    InstanceStatus,
    RetryRequested,
    SignalReceived,
    Started,
    StartTimer,
    StepCompleted,
    StepError,
    StepFailed,
    TaskCompleted,
    TimerFired,
    TimerKind,
)
from workflow_core.steps import BaseMachineStep, StepFailedError, as_step, has_code

__all__ = ["LocalEngine", "LocalTask"]


@dataclass(slots=True)
class LocalTask:
    """An open human task held by a :class:`LocalEngine`."""

    id: str
    instance_id: str
    step: str
    title: str
    description: str
    form_schema: dict[str, Any]
    assignee: str | None
    candidate_users: list[str]
    candidate_groups: list[str]
    priority: int
    due_at: datetime | None
    context: dict[str, Any]
    created_at: datetime


class _Instance:
    __slots__ = ("definition", "machine", "state")

    def __init__(
        self, definition: WorkflowDefinition, machine: WorkflowMachine, state: InstanceState
    ) -> None:
        self.definition = definition
        self.machine = machine
        self.state = state


class LocalEngine:
    """An in-process engine.

    Args:
        steps: Machine step classes (or instances) by which steps of definitions loaded from the
            wire are run, matched on ``step_type``; a definition built from Python classes uses
            its own classes.
        keep_finished: How many finished instances stay readable with :meth:`get` (``None`` keeps all).
    """

    def __init__(self, *, steps: Iterable[object] = (), keep_finished: int | None = 1000) -> None:
        self._implementations: dict[str, Any] = {}
        for item in steps:
            step = as_step(item)
            key = step.routing_key if isinstance(step, BaseMachineStep) else str(getattr(step, "name", ""))
            self._implementations[key] = step
        self._keep_finished = keep_finished
        self._active: dict[str, _Instance] = {}
        self._finished: OrderedDict[str, InstanceState] = OrderedDict()
        self._tasks: dict[str, LocalTask] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._machine_timers: dict[str, asyncio.TimerHandle] = {}
        self._other_timers: dict[str, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._machines: dict[int, WorkflowMachine] = {}

    # ------------------------------------------------------------------ public API

    async def start(
        self,
        definition: WorkflowDefinition,
        *,
        input: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        business_key: str | None = None,
    ) -> InstanceState:
        """Start an instance; machine steps begin running in the background."""
        machine = self._machines.get(id(definition))
        if machine is None or machine.graph is not definition.graph:
            machine = self._machines[id(definition)] = WorkflowMachine.for_definition(definition)
        instance_id = str(uuid.uuid4())
        event = Started(
            at=_now(),
            instance_id=instance_id,
            input=dict(input or {}),
            user_id=user_id,
            tenant_id=tenant_id,
            business_key=business_key,
        )
        transition = machine.apply(None, event)
        self._active[instance_id] = _Instance(definition, machine, transition.state)
        self._carry_out(instance_id, transition.commands)
        return self.get(instance_id)

    def get(self, instance_id: str) -> InstanceState:
        """The instance's current state (a snapshot).

        Raises:
            InstanceNotFoundError: unknown, or finished and no longer kept.
        """
        instance = self._active.get(instance_id)
        if instance is not None:
            return instance.state
        state = self._finished.get(instance_id)
        if state is None:
            raise InstanceNotFoundError(instance_id)
        return state

    def instances(self) -> list[InstanceState]:
        """Every instance still in memory: the active ones and the finished ones kept."""
        return [i.state for i in self._active.values()] + list(self._finished.values())

    def open_tasks(self, instance_id: str | None = None) -> list[LocalTask]:
        """Open human tasks, oldest first (of one instance, or of all)."""
        return [t for t in self._tasks.values() if instance_id is None or t.instance_id == instance_id]

    async def complete_task(
        self, task_id: str, *, data: Mapping[str, Any], user: str | None = None
    ) -> InstanceState:
        """Complete a human task with ``data`` (validated against its form schema).

        Raises:
            UnknownTaskError: no open task with this id.
            TaskDataInvalidError: the data violates the form; the task stays open.
        """
        task = self._tasks.get(task_id)
        if task is None:
            raise UnknownTaskError(task_id)
        self._apply(task.instance_id, TaskCompleted(at=_now(), task_id=task_id, data=dict(data), user=user))
        return self.get(task.instance_id)

    async def signal(
        self, instance_id: str, name: str, *, data: Mapping[str, Any] | None = None
    ) -> InstanceState:
        """Deliver a signal; steps waiting for ``name`` continue (or it is kept until one waits)."""
        self._apply(instance_id, SignalReceived(at=_now(), name=name, data=dict(data or {})))
        return self.get(instance_id)

    async def cancel(self, instance_id: str, *, reason: str = "") -> InstanceState:
        """Cancel the instance: open tasks and timers are withdrawn, late results ignored."""
        self._apply(instance_id, CancelRequested(at=_now(), reason=reason))
        return self.get(instance_id)

    async def retry(self, instance_id: str, *, data: Mapping[str, Any] | None = None) -> InstanceState:
        """Retry the instance's incidents, optionally merging ``data`` into its context first."""
        self._apply(instance_id, RetryRequested(at=_now(), data=dict(data or {})))
        return self.get(instance_id)

    async def run_until_idle(self, *, timeout: float | None = None) -> None:
        """Wait until no machine step runs or waits for a retry: every instance is completed, failed,
        cancelled, or waiting on people, timers or signals."""
        async with asyncio.timeout(timeout):
            while self._jobs or self._machine_timers:
                self._changed.clear()
                await self._changed.wait()

    async def aclose(self) -> None:
        """Stop timers and running steps."""
        for handle in [*self._machine_timers.values(), *self._other_timers.values()]:
            handle.cancel()
        self._machine_timers.clear()
        self._other_timers.clear()
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            with contextlib.suppress(asyncio.CancelledError):
                await job

    # ------------------------------------------------------------------ machinery

    def _apply(self, instance_id: str, event: Event) -> None:
        instance = self._active.get(instance_id)
        if instance is None:
            if instance_id in self._finished:
                # Late results and timers of finished instances are dropped, as in the orchestrator.
                return
            raise InstanceNotFoundError(instance_id)
        transition = instance.machine.apply(instance.state, event)
        if transition.ignored is not None:
            return
        instance.state = transition.state
        self._carry_out(instance_id, transition.commands)
        if instance.state.status in (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED):
            del self._active[instance_id]
            if self._keep_finished is None or self._keep_finished > 0:
                self._finished[instance_id] = instance.state
                if self._keep_finished is not None and len(self._finished) > self._keep_finished:
                    self._finished.popitem(last=False)
        self._changed.set()

    def _carry_out(self, instance_id: str, commands: list[Command]) -> None:
        loop = asyncio.get_running_loop()
        for command in commands:
            match command:
                case DispatchJob():
                    job = loop.create_task(self._run_job(instance_id, command))
                    self._jobs.add(job)
                    job.add_done_callback(self._job_done)
                case StartTimer():
                    delay = max((command.due_at - _now()).total_seconds(), 0.0)
                    handle = loop.call_later(delay, self._fire, instance_id, command.timer_id)
                    machine_work = command.kind in (TimerKind.RETRY, TimerKind.DEADLINE)
                    (self._machine_timers if machine_work else self._other_timers)[command.timer_id] = handle
                case CancelTimer():
                    for timers in (self._machine_timers, self._other_timers):
                        handle = timers.pop(command.timer_id, None)
                        if handle is not None:
                            handle.cancel()
                case CreateTask():
                    self._tasks[command.task_id] = LocalTask(
                        id=command.task_id,
                        instance_id=instance_id,
                        step=command.step,
                        title=command.title,
                        description=command.description,
                        form_schema=command.form_schema,
                        assignee=command.assignee,
                        candidate_users=list(command.candidate_users),
                        candidate_groups=list(command.candidate_groups),
                        priority=command.priority,
                        due_at=command.due_at,
                        context=command.context,
                        created_at=_now(),
                    )
                case CancelTask():
                    self._tasks.pop(command.task_id, None)
                case EscalateTask():
                    task = self._tasks.get(command.task_id)
                    if task is not None:
                        task.candidate_groups = sorted(
                            {*task.candidate_groups, *command.add_candidate_groups}
                        )
                        task.priority = command.priority if command.priority is not None else task.priority
                case _:
                    pass
        # Tasks completed through the engine leave the open list.
        state = self.get(instance_id)
        open_ids = {a.task_id for a in state.activations if a.task_id is not None}
        for task_id in [t.id for t in self._tasks.values() if t.instance_id == instance_id]:
            if task_id not in open_ids:
                del self._tasks[task_id]

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._changed.set()

    def _fire(self, instance_id: str, timer_id: str) -> None:
        self._machine_timers.pop(timer_id, None)
        self._other_timers.pop(timer_id, None)
        self._apply(instance_id, TimerFired(at=_now(), timer_id=timer_id))
        self._changed.set()

    async def _run_job(self, instance_id: str, job: DispatchJob) -> None:
        instance = self._active.get(instance_id)
        if instance is None:
            return
        step = instance.definition.step(job.step)
        if step is None or not has_code(step):
            step = self._implementations.get(job.step_type)
        state = instance.state
        context = WorkflowContext(
            job.input,
            metadata={
                "instance_id": instance_id,
                "definition": state.definition,
                "version": state.version,
                "step": job.step,
                "step_type": job.step_type,
                "job_id": job.job_id,
                "attempt": job.attempt,
            },
            history=state.history,
            user_id=state.user_id,
            tenant_id=state.tenant_id,
        )
        event: Event
        if step is None:
            error = StepError(
                type="NoImplementation", message=f"no code for step type {job.step_type}", retryable=False
            )
            event = StepFailed(at=_now(), job_id=job.job_id, attempt=job.attempt, error=error)
        else:
            try:
                await step.execute(context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event = StepFailed(
                    at=_now(), job_id=job.job_id, attempt=job.attempt, error=error_of(step, exc)
                )
            else:
                event = StepCompleted(
                    at=_now(), job_id=job.job_id, attempt=job.attempt, output=context.output
                )
        self._apply(instance_id, event)


def error_of(step: object, exc: BaseException) -> StepError:
    """How an exception from ``execute`` is reported: StepFailedError says; declared
    ``non_retryable_errors`` are final; anything else unexpected is retryable."""
    if isinstance(exc, StepFailedError):
        return StepError(type=exc.type, message=exc.message, retryable=exc.retryable)
    final: tuple[type[BaseException], ...] = getattr(step, "non_retryable_errors", ())
    return StepError(type=type(exc).__name__, message=str(exc), retryable=not isinstance(exc, final))


def _now() -> datetime:
    return datetime.now(UTC)
