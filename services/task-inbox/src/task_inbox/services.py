"""The inbox's rules: who sees a task, claim / unclaim / assign / complete, and the intake of task
messages from the orchestrator.

Errors (each a problem-details error of wf_platform, so the HTTP mapping is the platform's one):

    InboxError (marker)
    ├── TaskNotFoundError          404 task_not_found (also: another tenant's, or not visible)
    ├── InvalidCursorError         400 invalid_cursor
    ├── NotAssigneeError           403 not_assignee (assigning a task one has not claimed)
    ├── TaskConflictError          409 (base of the state conflicts below)
    │   ├── TaskAlreadyCompletedError  409 task_already_completed
    │   ├── TaskCancelledError         409 task_cancelled
    │   ├── TaskClaimedError           409 task_claimed (by someone else)
    │   ├── TaskNotClaimedError        409 task_not_claimed (unclaim of an open task)
    │   └── StaleTaskError             409 version_conflict (If-Match mismatch, or a lost race)
    └── InvalidTaskDataError       422 invalid_task_data (every error with its JSON Pointer path)

Decisions:

- A task that the caller may not see is 404, exactly like one that does not exist.
- Completing an open (unclaimed) task claims it for the caller in the same transaction: "claim and
  complete" is one click in the inbox. A task claimed by someone else cannot be completed (409).
- ``assign``: ``tasks:admin`` assigns any open or claimed task to anyone (``user: null`` releases it);
  a worker may hand over (delegate) a task it has claimed itself.
- Every state change bumps ``version``; an ``If-Match: "<version>"`` header makes the change
  conditional on it (409 ``version_conflict`` otherwise). Without it the change is still atomic:
  claim only applies to an open task, whoever commits first wins, the other gets 409.
- The completion and its ``wf.tasks.<tenant>.completed`` message (msg id ``task:<id>:completed``)
  are written in one transaction (outbox).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from task_inbox.metrics import InboxMetrics
from task_inbox.repositories import (
    NO_DUE_DATE,
    SortKey,
    Status,
    TaskEventRow,
    TaskFilter,
    TaskRepository,
    TaskRow,
    Visibility,
)
from wf_platform.auth import Caller
from wf_platform.db import TenantDatabase
from wf_platform.problems import (
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    UnprocessableError,
)
from wf_platform.telemetry import span
from wf_platform.tenancy import TenantId
from workflow_core.forms import FormSchemaError, validate_form_data
from workflow_core.messages import (
    DefinitionRef,
    TaskCancelledMessage,
    TaskCompletedMessage,
    TaskCreatedMessage,
    TaskEscalatedMessage,
    encode,
)
from workflow_core.subjects import task_subject

__all__ = [
    "ADMIN_ROLE",
    "WORK_ROLE",
    "AuditEntry",
    "InboxError",
    "InvalidCursorError",
    "InvalidTaskDataError",
    "ListQuery",
    "NotAssigneeError",
    "StaleTaskError",
    "TaskAlreadyCompletedError",
    "TaskCancelledError",
    "TaskClaimedError",
    "TaskConflictError",
    "TaskDetail",
    "TaskEscalatedMessage",
    "TaskIntake",
    "TaskNotClaimedError",
    "TaskNotFoundError",
    "TaskPage",
    "TaskService",
    "TaskSummary",
]

logger = logging.getLogger("task_inbox")

WORK_ROLE = "tasks:work"
ADMIN_ROLE = "tasks:admin"
ORCHESTRATOR_ACTOR = "system:orchestrator"


# -- errors ---------------------------------------------------------------------------------------


class InboxError(Exception):
    """Marker base of the inbox's errors."""


class TaskNotFoundError(NotFoundError, InboxError):
    """No such task for this caller (absent, another tenant's, or not visible to the caller)."""

    def __init__(self, task_id: object) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} not found", code="task_not_found")


class InvalidCursorError(BadRequestError, InboxError):
    """The page cursor is not one this service issued for this sort."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid cursor: {reason}", code="invalid_cursor")


class NotAssigneeError(ForbiddenError, InboxError):
    """Only the assignee (or ``tasks:admin``) may hand a task over."""

    def __init__(self, task_id: uuid.UUID) -> None:
        self.task_id = task_id
        super().__init__(
            f"task {task_id} can only be assigned by its assignee or an admin", code="not_assignee"
        )


class TaskConflictError(ConflictError, InboxError):
    """The task's state does not allow the action."""

    def __init__(self, task_id: uuid.UUID, message: str, *, code: str) -> None:
        self.task_id = task_id
        super().__init__(message, code=code)


class TaskAlreadyCompletedError(TaskConflictError):
    """The task is completed already."""

    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(task_id, f"task {task_id} is already completed", code="task_already_completed")


class TaskCancelledError(TaskConflictError):
    """The orchestrator withdrew the task."""

    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(task_id, f"task {task_id} was cancelled", code="task_cancelled")


class TaskClaimedError(TaskConflictError):
    """Someone else has claimed the task."""

    def __init__(self, task_id: uuid.UUID, assignee: str | None) -> None:
        self.assignee = assignee
        super().__init__(task_id, f"task {task_id} is claimed by someone else", code="task_claimed")


class TaskNotClaimedError(TaskConflictError):
    """Unclaim of a task nobody has claimed."""

    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(task_id, f"task {task_id} is not claimed", code="task_not_claimed")


class StaleTaskError(TaskConflictError):
    """The task changed since the caller read it (``If-Match``), or a concurrent change won."""

    def __init__(self, task_id: uuid.UUID, *, expected: int | None, actual: int | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            task_id, f"task {task_id} was changed concurrently; reload it", code="version_conflict"
        )


class InvalidTaskDataError(UnprocessableError, InboxError):
    """The submitted data does not satisfy the task's form; ``errors`` lists every problem."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(
            f"the form has {len(errors)} error(s)", code="invalid_task_data", errors=list(errors)
        )


# -- what the API returns -------------------------------------------------------------------------


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Who did what, when."""

    at: datetime
    actor: str
    action: str
    details: dict[str, Any] = {}


class TaskSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A task in a list."""

    id: uuid.UUID
    title: str
    description: str
    status: Status
    assignee: str | None
    candidate_users: list[str]
    candidate_groups: list[str]
    priority: int
    due_at: datetime | None
    follow_up_at: datetime | None
    overdue: bool
    """Past its due date and not yet done."""
    instance_id: str
    definition: DefinitionRef
    step: str
    created_at: datetime
    updated_at: datetime
    version: int
    """Bumped by every change; send it back as ``If-Match`` to make a change conditional."""


class TaskDetail(TaskSummary, frozen=True, kw_only=True):
    """A task with its form, context snapshot, completion and audit trail."""

    form_schema: dict[str, Any]
    ui_hints: dict[str, Any]
    context: dict[str, Any]
    claimed_at: datetime | None
    completed_at: datetime | None
    completed_by: str | None
    data: dict[str, Any] | None
    """The submitted form data, once completed."""
    comment: str | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    history: list[AuditEntry]


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of tasks; pass ``next_cursor`` as ``cursor`` for the next one."""

    items: list[TaskSummary]
    next_cursor: str | None
    limit: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    """The list filters as the API accepts them (already typed by the controller)."""

    statuses: tuple[Status, ...] = ()
    assignee: str | None = None
    """A user id, ``me`` (the caller) or ``none`` (unassigned)."""
    candidate_group: str | None = None
    candidate_user: str | None = None
    definition: str | None = None
    instance_id: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    priority: int | None = None
    priority_min: int | None = None
    q: str | None = None
    sort: SortKey = "created"
    descending: bool = True
    cursor: str | None = None
    limit: int = 50


# -- helpers --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _overdue(row: TaskRow, now: datetime) -> bool:
    return row.due_at is not None and row.due_at < now and row.status in ("open", "claimed")


def _summary(row: TaskRow, now: datetime) -> TaskSummary:
    return TaskSummary(
        id=row.id,
        title=row.title,
        description=row.description,
        status=row.status,
        assignee=row.assignee,
        candidate_users=list(row.candidate_users),
        candidate_groups=list(row.candidate_groups),
        priority=row.priority,
        due_at=row.due_at,
        follow_up_at=row.follow_up_at,
        overdue=_overdue(row, now),
        instance_id=row.instance_id,
        definition=DefinitionRef(name=row.definition_name, version=row.definition_version),
        step=row.step,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def _detail(row: TaskRow, events: Sequence[TaskEventRow], now: datetime) -> TaskDetail:
    summary = _summary(row, now)
    return TaskDetail(
        **{f: getattr(summary, f) for f in summary.__struct_fields__},
        form_schema=row.form_schema,
        ui_hints=row.ui_hints,
        context=row.context,
        claimed_at=row.claimed_at,
        completed_at=row.completed_at,
        completed_by=row.completed_by,
        data=row.completion_data,
        comment=row.completion_comment,
        cancelled_at=row.cancelled_at,
        cancel_reason=row.cancel_reason,
        history=[AuditEntry(at=e.at, actor=e.actor, action=e.action, details=e.details) for e in events],
    )


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    sort: str
    descending: bool
    value: Any
    id: str


def _encode_cursor(flt: TaskFilter, row: TaskRow) -> str:
    value: Any
    if flt.sort == "priority":
        value = row.priority
    elif flt.sort == "due":
        value = row.due_sort.isoformat()
    else:
        value = row.created_at.isoformat()
    raw = msgspec.json.encode(_Cursor(flt.sort, flt.descending, value, str(row.id)))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str, *, sort: SortKey, descending: bool) -> tuple[Any, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(raw, type=_Cursor)
        last_id = uuid.UUID(decoded.id)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidCursorError("not a cursor of this service") from None
    if decoded.sort != sort or decoded.descending != descending:
        raise InvalidCursorError("the cursor belongs to another sort order")
    if sort == "priority":
        if not isinstance(decoded.value, int) or isinstance(decoded.value, bool):
            raise InvalidCursorError("bad position")
        return decoded.value, last_id
    if not isinstance(decoded.value, str):
        raise InvalidCursorError("bad position")
    try:
        return datetime.fromisoformat(decoded.value), last_id
    except ValueError:
        raise InvalidCursorError("bad position") from None


def _form_errors(schema: Mapping[str, Any], data: Mapping[str, Any]) -> list[FieldError]:
    try:
        problems = validate_form_data(schema, data)
    except FormSchemaError as exc:
        # The registry checks forms at registration; a broken one here is the definition's fault,
        # and the person can do nothing about it: say so rather than accept any data.
        logger.error("task form schema is invalid: %s", exc)
        return [FieldError(path="", message="this task's form is broken; ask an administrator")]
    return [FieldError(path=p.path, message=p.message) for p in problems]


# -- the API's rules ------------------------------------------------------------------------------


class TaskService:
    """What one caller may do with the tasks of its tenant."""

    def __init__(
        self,
        db: TenantDatabase,
        caller: Caller,
        /,
        *,
        metrics: InboxMetrics | None = None,
        page_size_max: int = 200,
    ) -> None:
        self.db = db
        self.caller = caller
        self.metrics = metrics
        self.page_size_max = page_size_max
        self.visibility = Visibility(
            sub=caller.sub, groups=caller.groups, everything=caller.has_role(ADMIN_ROLE)
        )

    @property
    def is_admin(self) -> bool:
        """Whether the caller sees and assigns every task of its tenant."""
        return self.visibility.everything

    def _count(self, action: str) -> None:
        if self.metrics is not None:
            self.metrics.actions.labels(action=action).inc()

    async def list(self, query: ListQuery, /) -> TaskPage:
        """A page of the tasks the caller may see, filtered and sorted (keyset pagination)."""
        limit = max(1, min(query.limit, self.page_size_max))
        assignee = query.assignee
        unassigned = assignee == "none"
        if assignee == "me":
            assignee = self.caller.sub
        elif unassigned:
            assignee = None
        flt = TaskFilter(
            statuses=query.statuses,
            assignee=assignee,
            unassigned=unassigned,
            candidate_group=query.candidate_group,
            candidate_user=query.candidate_user,
            definition=query.definition,
            instance_id=query.instance_id,
            due_before=query.due_before,
            due_after=query.due_after,
            priority=query.priority,
            priority_min=query.priority_min,
            q=query.q,
            sort=query.sort,
            descending=query.descending,
            limit=limit,
        )
        if query.cursor:
            after = _decode_cursor(query.cursor, sort=query.sort, descending=query.descending)
            flt = dataclasses.replace(flt, after=after)
        with span("tasks.list") as current:
            current.set_attribute("wf.tenant", self.caller.tenant)
            async with self.db.transaction() as uow:
                rows = await TaskRepository(uow.conn).list(flt, visibility=self.visibility)
        now = _now()
        page = rows[:limit]
        next_cursor = _encode_cursor(flt, page[-1]) if len(rows) > limit and page else None
        return TaskPage(items=[_summary(r, now) for r in page], next_cursor=next_cursor, limit=limit)

    async def get(self, task_id: uuid.UUID, /) -> TaskDetail:
        """One task the caller may see, with its form and audit trail."""
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await repo.get(task_id, visibility=self.visibility)
            if row is None:
                raise TaskNotFoundError(task_id)
            events = await repo.events(task_id)
        return _detail(row, events, _now())

    async def _load(self, repo: TaskRepository, task_id: uuid.UUID, expected: int | None) -> TaskRow:
        row = await repo.get(task_id, visibility=self.visibility)
        if row is None:
            raise TaskNotFoundError(task_id)
        if expected is not None and expected != row.version:
            raise StaleTaskError(task_id, expected=expected, actual=row.version)
        return row

    @staticmethod
    def _refuse_finished(row: TaskRow) -> None:
        if row.status == "completed":
            raise TaskAlreadyCompletedError(row.id)
        if row.status == "cancelled":
            raise TaskCancelledError(row.id)

    async def _finish(self, repo: TaskRepository, row: TaskRow) -> TaskDetail:
        return _detail(row, await repo.events(row.id), _now())

    async def claim(self, task_id: uuid.UUID, /, *, expected_version: int | None = None) -> TaskDetail:
        """Claim an open task for the caller (idempotent for its own claim)."""
        me = self.caller.sub
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await self._load(repo, task_id, expected_version)
            self._refuse_finished(row)
            if row.status == "claimed":
                if row.assignee == me:
                    return await self._finish(repo, row)
                raise TaskClaimedError(task_id, row.assignee)
            updated = await repo.update_if(
                task_id,
                version=row.version,
                statuses=("open",),
                values={"status": "claimed", "assignee": me, "claimed_at": _now()},
            )
            if updated is None:
                raise StaleTaskError(task_id, expected=row.version, actual=None)
            await repo.add_event(task_id, actor=me, action="claimed")
            result = await self._finish(repo, updated)
        self._count("claim")
        return result

    async def unclaim(self, task_id: uuid.UUID, /, *, expected_version: int | None = None) -> TaskDetail:
        """Give a claimed task back to its candidates (the assignee, or an admin)."""
        me = self.caller.sub
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await self._load(repo, task_id, expected_version)
            self._refuse_finished(row)
            if row.status != "claimed":
                raise TaskNotClaimedError(task_id)
            if row.assignee != me and not self.is_admin:
                raise TaskClaimedError(task_id, row.assignee)
            updated = await repo.update_if(
                task_id,
                version=row.version,
                statuses=("claimed",),
                values={"status": "open", "assignee": None, "claimed_at": None},
            )
            if updated is None:
                raise StaleTaskError(task_id, expected=row.version, actual=None)
            await repo.add_event(task_id, actor=me, action="unclaimed", details={"previous": row.assignee})
            result = await self._finish(repo, updated)
        self._count("unclaim")
        return result

    async def assign(
        self, task_id: uuid.UUID, user: str | None, /, *, expected_version: int | None = None
    ) -> TaskDetail:
        """Assign a task to ``user`` (``None`` releases it): admins any task, workers their own claim."""
        me = self.caller.sub
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await self._load(repo, task_id, expected_version)
            self._refuse_finished(row)
            if not self.is_admin and not (row.status == "claimed" and row.assignee == me):
                raise NotAssigneeError(task_id)
            values: dict[str, Any] = (
                {"status": "claimed", "assignee": user, "claimed_at": _now()}
                if user is not None
                else {"status": "open", "assignee": None, "claimed_at": None}
            )
            updated = await repo.update_if(
                task_id, version=row.version, statuses=("open", "claimed"), values=values
            )
            if updated is None:
                raise StaleTaskError(task_id, expected=row.version, actual=None)
            await repo.add_event(
                task_id, actor=me, action="assigned", details={"from": row.assignee, "to": user}
            )
            result = await self._finish(repo, updated)
        self._count("assign")
        return result

    async def complete(
        self,
        task_id: uuid.UUID,
        data: Mapping[str, Any],
        /,
        *,
        comment: str | None = None,
        expected_version: int | None = None,
    ) -> TaskDetail:
        """Validate ``data`` against the form and complete the task; the completion message is
        published through the outbox in the same transaction."""
        me = self.caller.sub
        tenant = self.caller.tenant
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await self._load(repo, task_id, expected_version)
            self._refuse_finished(row)
            if row.status == "claimed" and row.assignee != me:
                raise TaskClaimedError(task_id, row.assignee)
            errors = _form_errors(row.form_schema, data)
            if errors:
                raise InvalidTaskDataError(errors)
            now = _now()
            values: dict[str, Any] = {
                "status": "completed",
                "assignee": me,
                "completed_at": now,
                "completed_by": me,
                "completion_data": dict(data),
                "completion_comment": comment,
            }
            if row.status == "open":
                values["claimed_at"] = now
            updated = await repo.update_if(
                task_id, version=row.version, statuses=("open", "claimed"), values=values
            )
            if updated is None:
                raise StaleTaskError(task_id, expected=row.version, actual=None)
            if row.status == "open":
                await repo.add_event(task_id, actor=me, action="claimed")
            await repo.add_event(task_id, actor=me, action="completed", details={"comment": comment})
            message = TaskCompletedMessage(
                task_id=str(task_id),
                tenant=tenant,
                instance_id=row.instance_id,
                data=dict(data),
                user=me,
                completed_at=now,
                comment=comment,
            )
            await uow.publish(
                task_subject(tenant, "completed"),
                encode(message),
                msg_id=f"task:{task_id}:completed",
                ordering_key=row.instance_id,
            )
            result = await self._finish(repo, updated)
        self._count("complete")
        return result


# -- intake of the orchestrator's messages --------------------------------------------------------

Outcome = Literal["applied", "duplicate", "tombstoned", "unknown", "ignored"]


class TaskIntake:
    """Applies ``created`` / ``cancelled`` / ``escalated`` idempotently, one transaction each."""

    def __init__(self, db: TenantDatabase, /) -> None:
        self.db = db

    @property
    def tenant(self) -> TenantId:
        """Whose tasks these are."""
        return self.db.tenant

    async def created(self, message: TaskCreatedMessage, /) -> Outcome:
        """Open the task unless it exists (redelivery) or was cancelled before it arrived."""
        task_id = uuid.UUID(message.task_id)
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            await repo.serialize_messages(task_id)
            if await repo.is_tombstoned(task_id):
                return "tombstoned"
            inserted = await repo.insert_if_absent(
                {
                    "id": task_id,
                    "instance_id": message.instance_id,
                    "definition_name": message.definition.name,
                    "definition_version": message.definition.version,
                    "step": message.step,
                    "title": message.title,
                    "description": message.description,
                    "form_schema": message.form_schema,
                    "ui_hints": message.ui_hints,
                    "context": message.context,
                    "assignee": message.assignee,
                    "candidate_users": sorted(set(message.candidate_users)),
                    "candidate_groups": sorted(set(message.candidate_groups)),
                    "priority": message.priority,
                    "due_at": message.due_at,
                    "due_sort": message.due_at or NO_DUE_DATE,
                    "follow_up_at": message.follow_up_at,
                    # A step with a fixed assignee starts claimed by that person.
                    "status": "claimed" if message.assignee else "open",
                    "version": 1,
                    "created_at": message.created_at,
                    "claimed_at": message.created_at if message.assignee else None,
                }
            )
            if not inserted:
                return "duplicate"
            await repo.add_event(
                task_id,
                actor=ORCHESTRATOR_ACTOR,
                action="created",
                details={"instance_id": message.instance_id, "step": message.step},
            )
        return "applied"

    async def cancelled(self, message: TaskCancelledMessage, /) -> Outcome:
        """Withdraw the task; before it arrived, leave a tombstone. A completed task stays completed."""
        task_id = uuid.UUID(message.task_id)
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            await repo.serialize_messages(task_id)
            row = await repo.lock(task_id)
            if row is None:
                await repo.add_tombstone(task_id, instance_id=message.instance_id, reason=message.reason)
                return "tombstoned"
            if row.status in ("completed", "cancelled"):
                return "duplicate" if row.status == "cancelled" else "ignored"
            await repo.update_if(
                task_id,
                version=row.version,
                statuses=("open", "claimed"),
                values={"status": "cancelled", "cancelled_at": _now(), "cancel_reason": message.reason},
            )
            await repo.add_event(
                task_id, actor=ORCHESTRATOR_ACTOR, action="cancelled", details={"reason": message.reason}
            )
        return "applied"

    async def escalated(self, message: TaskEscalatedMessage, /) -> Outcome:
        """Add candidate groups and set the priority of a task past its due date."""
        task_id = uuid.UUID(message.task_id)
        async with self.db.transaction() as uow:
            repo = TaskRepository(uow.conn)
            row = await repo.lock(task_id)
            if row is None:
                return "tombstoned" if await repo.is_tombstoned(task_id) else "unknown"
            if row.status in ("completed", "cancelled"):
                return "ignored"
            groups = sorted(set(row.candidate_groups) | set(message.add_candidate_groups))
            values: dict[str, Any] = {"candidate_groups": groups}
            if message.priority is not None:
                values["priority"] = message.priority
            if groups == sorted(row.candidate_groups) and message.priority in (None, row.priority):
                return "duplicate"
            await repo.update_if(task_id, version=row.version, statuses=("open", "claimed"), values=values)
            await repo.add_event(
                task_id,
                actor=ORCHESTRATOR_ACTOR,
                action="escalated",
                details={
                    "added_candidate_groups": sorted(set(groups) - set(row.candidate_groups)),
                    "priority": message.priority,
                    "previous_priority": row.priority,
                },
            )
        return "applied"
