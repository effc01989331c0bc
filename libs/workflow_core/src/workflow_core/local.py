"""LocalEngine: run definitions in-process, on the same pure state machine the orchestrator drives.

For tests, notebooks and small apps: machine steps' ``execute`` runs in this process (as asyncio
tasks), human tasks are kept in memory, timers are real (``loop.call_later``). Nothing is durable.
A step's result is applied as soon as it returns, and when that dispatches exactly one next step, the
same task runs it (a chain of steps costs one task, not one per step); parallel branches get a task
each.

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

An instance's state is changed in place by each event, except when it was handed out (``start``,
``get``...) since: that event works on a copy (copy-on-write), so a state a caller holds never
changes under them. Ids of jobs, tasks and timers are "sequential" ones (see
:class:`~workflow_core.engine.WorkflowMachine`): nothing here outlives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from workflow_core.context import WorkflowContext, copy_data
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
    StepRecord,
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


_INLINE_STEPS = 100
"""A task that runs a chain of steps inline yields to the event loop after this many (fairness)."""
_COMPLETED = InstanceStatus.COMPLETED  # Enum member reads cost ~0.25 µs on Python 3.11
_CANCELLED = InstanceStatus.CANCELLED
_FAILED = InstanceStatus.FAILED
_RUNNING = InstanceStatus.RUNNING
_WAITING = InstanceStatus.WAITING


class _Loaded:
    """A definition as this engine runs it: its machine and the code of its top-level steps."""

    __slots__ = ("code", "definition", "machine")

    def __init__(self, definition: WorkflowDefinition, machine: WorkflowMachine) -> None:
        self.definition = definition
        self.machine = machine
        self.code: dict[str, Any] = {}
        """Step object by node id, for top-level nodes (group members may be built per call)."""


class _Instance:
    __slots__ = ("loaded", "machine", "shared", "state", "task_ids")

    def __init__(self, loaded: _Loaded, state: InstanceState) -> None:
        self.loaded = loaded
        self.machine = loaded.machine
        self.state = state
        self.shared = False
        """Whether ``state`` was handed out since the last event: the next one must not change it."""
        self.task_ids: set[str] = set()
        """The instance's open tasks in ``LocalEngine._tasks``."""

    def snapshot(self) -> InstanceState:
        """The state, to hand out: from now on it stays as it is."""
        self.shared = True
        return self.state


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
        self._jobs: dict[tuple[str, int], asyncio.Task[None]] = {}
        """Running job tasks, by the job and attempt each began with: a task knows its key without
        asking asyncio for the current task (which costs more than a no-op step). The attempt is
        part of the key because a retry after a deadline reuses the job id while the late attempt's
        task may still run."""
        self._machine_timers: dict[str, asyncio.TimerHandle] = {}
        self._other_timers: dict[str, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._idle_waiters = 0
        self._end_waiters: dict[str, list[asyncio.Future[InstanceState]]] = {}
        self._loaded: dict[int, _Loaded] = {}

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
        loaded = self._loaded.get(id(definition))
        # _Loaded holds the definition, so its id is not reused while the entry lives.
        if loaded is None or loaded.machine.graph is not definition.graph:
            machine = WorkflowMachine.for_definition(definition, ids="sequential")
            loaded = self._loaded[id(definition)] = _Loaded(definition, machine)
        instance_id = _uuid4()
        event = Started(
            at=_now(),
            instance_id=instance_id,
            input=dict(input or {}),
            user_id=user_id,
            tenant_id=tenant_id,
            business_key=business_key,
        )
        transition = loaded.machine.apply(None, event)
        instance = self._active[instance_id] = _Instance(loaded, transition.state)
        self._carry_out(instance_id, instance, transition.commands)
        return instance.snapshot()

    def get(self, instance_id: str) -> InstanceState:
        """The instance's current state (a snapshot).

        Raises:
            InstanceNotFoundError: unknown, or finished and no longer kept.
        """
        instance = self._active.get(instance_id)
        if instance is not None:
            return instance.snapshot()
        state = self._finished.get(instance_id)
        if state is None:
            raise InstanceNotFoundError(instance_id)
        return state

    def instances(self) -> list[InstanceState]:
        """Every instance still in memory: the active ones and the finished ones kept."""
        return [i.snapshot() for i in self._active.values()] + list(self._finished.values())

    def open_tasks(self, instance_id: str | None = None) -> list[LocalTask]:
        """Open human tasks, oldest first (of one instance, or of all)."""
        if instance_id is None:
            return list(self._tasks.values())
        return [t for t in self._tasks.values() if t.instance_id == instance_id]

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
        event = TaskCompleted(at=_now(), task_id=task_id, data=dict(data), user=user)
        return self._apply_and_get(task.instance_id, event)

    async def signal(
        self, instance_id: str, name: str, *, data: Mapping[str, Any] | None = None
    ) -> InstanceState:
        """Deliver a signal; steps waiting for ``name`` continue (or it is kept until one waits)."""
        return self._apply_and_get(instance_id, SignalReceived(at=_now(), name=name, data=dict(data or {})))

    async def cancel(self, instance_id: str, *, reason: str = "") -> InstanceState:
        """Cancel the instance: open tasks and timers are withdrawn, late results ignored."""
        return self._apply_and_get(instance_id, CancelRequested(at=_now(), reason=reason))

    async def retry(self, instance_id: str, *, data: Mapping[str, Any] | None = None) -> InstanceState:
        """Retry the instance's incidents, optionally merging ``data`` into its context first."""
        return self._apply_and_get(instance_id, RetryRequested(at=_now(), data=dict(data or {})))

    async def wait(self, instance_id: str) -> InstanceState:
        """Wait until the instance is completed, cancelled or failed (an incident needs someone);
        its state then. An instance that waits on people, timers or signals is waited for.

        Raises:
            InstanceNotFoundError: unknown, or finished and no longer kept.
        """
        instance = self._active.get(instance_id)
        if instance is None:
            return self.get(instance_id)
        if instance.state.status is _FAILED:
            return instance.snapshot()
        future: asyncio.Future[InstanceState] = asyncio.get_running_loop().create_future()
        waiters = self._end_waiters.setdefault(instance_id, [])
        waiters.append(future)
        try:
            return await future
        finally:
            if future.cancelled():  # the caller gave up: forget it
                waiters.remove(future)
                if not waiters and self._end_waiters.get(instance_id) is waiters:
                    del self._end_waiters[instance_id]

    async def run_until_idle(self, *, timeout: float | None = None) -> None:
        """Wait until no machine step runs or waits for a retry: every instance is completed, failed,
        cancelled, or waiting on people, timers or signals."""
        async with asyncio.timeout(timeout):
            while self._jobs or self._machine_timers:
                self._changed.clear()
                self._idle_waiters += 1
                try:
                    await self._changed.wait()
                finally:
                    self._idle_waiters -= 1

    async def aclose(self) -> None:
        """Stop timers and running steps."""
        for handle in [*self._machine_timers.values(), *self._other_timers.values()]:
            handle.cancel()
        self._machine_timers.clear()
        self._other_timers.clear()
        for job in list(self._jobs.values()):
            job.cancel()
        for job in list(self._jobs.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await job
        self._jobs.clear()  # a task cancelled before it ran never removed itself

    # ------------------------------------------------------------------ machinery

    def _apply_and_get(self, instance_id: str, event: Event) -> InstanceState:
        """Apply ``event``; the instance's state after it (also when it ended and is not kept)."""
        instance = self._active.get(instance_id)
        self._apply(instance_id, event)
        return instance.snapshot() if instance is not None else self.get(instance_id)

    def _apply(self, instance_id: str, event: Event, *, inline: bool = False) -> DispatchJob | None:
        """Apply ``event`` and carry out the commands. With ``inline``, the first job dispatched is
        returned for the caller to run rather than started as a task."""
        instance = self._active.get(instance_id)
        if instance is None:
            if inline or instance_id in self._finished:
                # Late results and timers of finished instances are dropped, as in the orchestrator.
                return None
            raise InstanceNotFoundError(instance_id)
        transition = instance.machine.apply(instance.state, event, in_place=not instance.shared)
        if transition.ignored is not None:
            return None
        state = instance.state = transition.state
        instance.shared = False
        commands = transition.commands
        if inline and len(commands) == 1 and type(commands[0]) is DispatchJob and not instance.task_ids:
            job = commands[0]  # the usual step of a chain: its next job, run by the caller
        else:
            job = self._carry_out(instance_id, instance, commands, inline=inline)
        status = state.status
        if status is not _RUNNING and status is not _WAITING:  # ended or failed
            if status is not _FAILED:
                self._settle(instance_id, state)
            waiters = self._end_waiters.pop(instance_id, None)
            if waiters:
                snapshot = instance.snapshot()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(snapshot)
        if self._idle_waiters:
            self._changed.set()
        return job

    def _settle(self, instance_id: str, state: InstanceState) -> None:
        """Move an instance that ended from the active ones to the finished window."""
        del self._active[instance_id]
        if self._keep_finished is None or self._keep_finished > 0:
            self._finished[instance_id] = state
            if self._keep_finished is not None and len(self._finished) > self._keep_finished:
                self._finished.popitem(last=False)

    def _carry_out(
        self, instance_id: str, instance: _Instance, commands: list[Command], *, inline: bool = False
    ) -> DispatchJob | None:
        first: DispatchJob | None = None
        for command in commands:
            match command:
                case DispatchJob():
                    if inline and first is None:
                        first = command
                        continue
                    self._jobs[command.job_id, command.attempt] = asyncio.get_running_loop().create_task(
                        self._run_job(instance_id, command)
                    )
                case StartTimer():
                    delay = max((command.due_at - _now()).total_seconds(), 0.0)
                    handle = asyncio.get_running_loop().call_later(
                        delay, self._fire, instance_id, command.timer_id
                    )
                    machine_work = command.kind in (TimerKind.RETRY, TimerKind.DEADLINE)
                    (self._machine_timers if machine_work else self._other_timers)[command.timer_id] = handle
                case CancelTimer():
                    for timers in (self._machine_timers, self._other_timers):
                        handle = timers.pop(command.timer_id, None)
                        if handle is not None:
                            handle.cancel()
                case CreateTask():
                    instance.task_ids.add(command.task_id)
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
                    instance.task_ids.discard(command.task_id)
                case EscalateTask():
                    task = self._tasks.get(command.task_id)
                    if task is not None:
                        task.candidate_groups = sorted(
                            {*task.candidate_groups, *command.add_candidate_groups}
                        )
                        task.priority = command.priority if command.priority is not None else task.priority
                case _:
                    pass
        if instance.task_ids:
            # Tasks completed through the engine leave the open list.
            open_ids = {a.task_id for a in instance.state.activations if a.task_id is not None}
            for task_id in instance.task_ids - open_ids:
                self._tasks.pop(task_id, None)
                instance.task_ids.discard(task_id)
        return first

    def _fire(self, instance_id: str, timer_id: str) -> None:
        self._machine_timers.pop(timer_id, None)
        self._other_timers.pop(timer_id, None)
        self._apply(instance_id, TimerFired(at=_now(), timer_id=timer_id))
        if self._idle_waiters:
            self._changed.set()

    async def _run_job(self, instance_id: str, job: DispatchJob) -> None:
        """Run ``job``, apply its result, and run the next job inline while there is exactly one
        (or, when several are dispatched at once, the first; the others get tasks of their own)."""
        key = (job.job_id, job.attempt)
        ran = 0
        next_job: DispatchJob | None = job
        try:
            while next_job is not None:
                job = next_job
                if ran == _INLINE_STEPS:
                    ran = 0
                    await asyncio.sleep(0)
                instance = self._active.get(instance_id)
                if instance is None:
                    return
                code = instance.loaded.code
                step = code[job.step] if job.step in code else self._code(instance.loaded, job)
                event: Event
                if step is None:
                    error = StepError(
                        type="NoImplementation",
                        message=f"no code for step type {job.step_type}",
                        retryable=False,
                    )
                    event = StepFailed(at=_now(), job_id=job.job_id, attempt=job.attempt, error=error)
                else:
                    context = _JobContext(instance.state, job)
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
                            at=_now(), job_id=job.job_id, attempt=job.attempt, output=context.changes
                        )
                ran += 1
                next_job = self._apply(instance_id, event, inline=True)
        finally:
            # The task leaves ``_jobs`` itself: a done callback would cost the loop one more callback.
            self._jobs.pop(key, None)
            if self._idle_waiters:
                self._changed.set()

    def _code(self, loaded: _Loaded, job: DispatchJob) -> Any:
        """The step object that runs ``job``: the definition's own, else the one registered for its
        step type (None when there is neither). Remembered for top-level steps."""
        step = loaded.definition.step(job.step)
        if step is None or not has_code(step):
            step = self._implementations.get(job.step_type)
        if "/" not in job.step:
            loaded.code[job.step] = step
        return step


class _JobContext(WorkflowContext):
    """What the step of a job sees: a :class:`WorkflowContext` whose metadata, history, user and
    tenant are read from the instance's state when asked for. Most steps never read them, and
    building them cost as much as running a no-op step."""

    __slots__ = ("_history_length", "_job", "_state", "changes")

    def __init__(self, state: InstanceState, job: DispatchJob) -> None:
        # Not WorkflowContext.__init__: it would build the metadata now.
        self._data = copy_data(job.input) if job.input else {}
        changes: dict[str, Any] = {}
        self._changes = self.changes = changes
        """``changes``: what the step set, the very dict (``output`` copies it), for the engine to
        read once the step returned."""
        # The state as it is now. Its history is copied when read: the list only ever grows (records
        # are appended, an in-place state's list too), so its first entries stay what they are.
        self._state = state
        self._history_length = len(state.history)
        self._job = job

    @property
    def metadata(self) -> Mapping[str, Any]:
        job = self._job
        state = self._state
        return MappingProxyType(
            {
                "instance_id": state.instance_id,
                "definition": state.definition,
                "version": state.version,
                "step": job.step,
                "step_type": job.step_type,
                "job_id": job.job_id,
                "attempt": job.attempt,
            }
        )

    @property
    def history(self) -> tuple[StepRecord, ...]:  # pyright: ignore[reportIncompatibleVariableOverride]
        return tuple(self._state.history[: self._history_length])

    @property
    def user_id(self) -> str | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._state.user_id

    @property
    def tenant_id(self) -> str | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._state.tenant_id

    @property
    def job_id(self) -> str | None:
        return self._job.job_id

    @property
    def attempt(self) -> int:
        return self._job.attempt


def error_of(step: object, exc: BaseException) -> StepError:
    """How an exception from ``execute`` is reported: StepFailedError says; declared
    ``non_retryable_errors`` are final; anything else unexpected is retryable."""
    if isinstance(exc, StepFailedError):
        return StepError(type=exc.type, message=exc.message, retryable=exc.retryable)
    final: tuple[type[BaseException], ...] = getattr(step, "non_retryable_errors", ())
    return StepError(type=type(exc).__name__, message=str(exc), retryable=not isinstance(exc, final))


_now: Callable[[], datetime] = functools.partial(datetime.now, UTC)
"""The time now (a C-level call: it runs on every step)."""


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


_random_hex: list[str] = []
"""Random hex digits not yet used: ``os.urandom`` is a system call, so it is read 4 KiB at a time.
A forked child forgets them (it would otherwise make its parent's ids)."""
os.register_at_fork(after_in_child=_random_hex.clear)


def _uuid4() -> str:
    """``str(uuid.uuid4())`` without building a ``UUID`` and with one ``os.urandom`` call per 256 ids
    (together a fifth of the cost): the same randomness."""
    if not _random_hex:
        pool = os.urandom(4096).hex()
        _random_hex.extend(pool[i : i + 32] for i in range(0, len(pool), 32))
    x = _random_hex.pop()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
