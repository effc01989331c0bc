"""HTTP API ``/v1/tasks`` (DESIGN.md §4): convert, call the service once, return a Struct.

``sort`` is ``created``, ``due`` or ``priority``, ``-`` in front for descending (default
``-created``); ``status`` takes a comma-separated list; ``assignee`` takes a user id, ``me`` or
``none``. Changes answer with the task and an ``ETag`` of its version; ``If-Match`` makes a change
conditional on it (409 ``version_conflict``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from task_inbox.repositories import SortKey, Status
from task_inbox.services import ADMIN_ROLE, WORK_ROLE, ListQuery, TaskDetail, TaskPage, TaskService
from wf_platform.auth import TENANT_GATE_STATE_KEY, TenantGate, caller_from_connection
from wf_platform.problems import BadRequestError, ForbiddenError

__all__ = [
    "AssignTask",
    "CompleteTask",
    "TaskController",
    "parse_sort",
    "parse_statuses",
    "requires_any_role",
]

_STATUSES: frozenset[str] = frozenset({"open", "claimed", "completed", "cancelled"})
_SORTS: frozenset[str] = frozenset({"created", "due", "priority"})

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def requires_any_role(*roles: str) -> Guard:
    """A guard: the caller holds at least one of ``roles`` (403), and its tenant is active (403).

    (``wf_platform.auth.requires_role`` needs every role; ``tasks:admin`` alone must be enough here.)
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        caller = caller_from_connection(connection)
        if not any(caller.has_role(r) for r in roles):
            raise ForbiddenError(f"requires role {' or '.join(roles)}", code="missing_role")
        gate: TenantGate | None = connection.app.state.get(TENANT_GATE_STATE_KEY)
        if gate is not None:
            await gate.ensure_active(caller.tenant)

    guard.__name__ = f"requires_any_role({', '.join(roles)})"
    return guard


WORK = requires_any_role(WORK_ROLE, ADMIN_ROLE)


class CompleteTask(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``complete``."""

    data: dict[str, Any] = {}
    comment: str | None = msgspec.field(default=None)


class AssignTask(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``assign``: a user id, or ``null`` to release the task."""

    user: str | None


def parse_statuses(raw: str | None, /) -> tuple[Status, ...]:
    """``open,claimed`` -> ``("open", "claimed")``; 400 on an unknown status."""
    if not raw:
        return ()
    values = [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in values if v not in _STATUSES]
    if unknown:
        raise BadRequestError(f"unknown status {', '.join(unknown)}", code="invalid_filter")
    return tuple(cast("Status", v) for v in dict.fromkeys(values))


def parse_sort(raw: str | None, /) -> tuple[SortKey, bool]:
    """``-due`` -> ``("due", True)``; 400 on an unknown key."""
    raw = (raw or "-created").strip()
    descending = raw.startswith("-")
    key = raw.lstrip("-+")
    if key not in _SORTS:
        raise BadRequestError(f"unknown sort {raw!r}; use created, due or priority", code="invalid_filter")
    return cast("SortKey", key), descending


def _instant(value: datetime | None, name: str, /) -> datetime | None:
    """``value`` in UTC; 400 when that is outside the years 1 to 9999 (the database cannot compare it)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequestError(f"{name} is out of range", code="invalid_filter") from None


def _if_match(raw: str | None) -> int | None:
    if raw is None or not raw.strip() or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise BadRequestError("If-Match must be a task version", code="bad_precondition") from None


def _with_etag(task: TaskDetail) -> Response[TaskDetail]:
    return Response(task, status_code=HTTP_200_OK, headers={"ETag": f'"{task.version}"'})


class TaskController(Controller):
    """``/v1/tasks``: list, read, claim, unclaim, assign, complete."""

    path = "/v1/tasks"
    tags = ["tasks"]
    guards = [WORK]

    @get("/", summary="The tasks the caller may act on")
    async def list_tasks(
        self,
        tasks: NamedDependency[TaskService],
        status: FromQuery[str | None] = None,
        assignee: FromQuery[str | None] = None,
        candidate_group: FromQuery[str | None] = None,
        candidate_user: FromQuery[str | None] = None,
        definition: FromQuery[str | None] = None,
        instance_id: FromQuery[str | None] = None,
        due_before: FromQuery[datetime | None] = None,
        due_after: FromQuery[datetime | None] = None,
        priority: Annotated[int | None, QueryParameter(ge=0, le=100)] = None,
        priority_min: Annotated[int | None, QueryParameter(ge=0, le=100)] = None,
        q: Annotated[str | None, QueryParameter(max_length=200)] = None,
        sort: FromQuery[str | None] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=1000)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
    ) -> TaskPage:
        """Filter, sort, and page with ``cursor`` (keyset pagination: stable while tasks arrive)."""
        key, descending = parse_sort(sort)
        return await tasks.list(
            ListQuery(
                statuses=parse_statuses(status),
                assignee=assignee or None,
                candidate_group=candidate_group or None,
                candidate_user=candidate_user or None,
                definition=definition or None,
                instance_id=instance_id or None,
                due_before=_instant(due_before, "due_before"),
                due_after=_instant(due_after, "due_after"),
                priority=priority,
                priority_min=priority_min,
                q=q or None,
                sort=key,
                descending=descending,
                cursor=cursor or None,
                limit=limit,
            )
        )

    @get("/{task_id:uuid}", summary="One task with its form and audit trail")
    async def get_task(
        self, task_id: FromPath[uuid.UUID], tasks: NamedDependency[TaskService]
    ) -> Response[TaskDetail]:
        """404 when it does not exist or the caller may not see it."""
        return _with_etag(await tasks.get(task_id))

    @post("/{task_id:uuid}/claim", status_code=HTTP_200_OK, summary="Claim a task")
    async def claim(
        self,
        task_id: FromPath[uuid.UUID],
        tasks: NamedDependency[TaskService],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[TaskDetail]:
        """Claim an open task (409 when someone else has it)."""
        return _with_etag(await tasks.claim(task_id, expected_version=_if_match(if_match)))

    @post("/{task_id:uuid}/unclaim", status_code=HTTP_200_OK, summary="Give a task back")
    async def unclaim(
        self,
        task_id: FromPath[uuid.UUID],
        tasks: NamedDependency[TaskService],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[TaskDetail]:
        """The assignee (or an admin) releases the task to its candidates."""
        return _with_etag(await tasks.unclaim(task_id, expected_version=_if_match(if_match)))

    @post("/{task_id:uuid}/assign", status_code=HTTP_200_OK, summary="Assign a task")
    async def assign(
        self,
        task_id: FromPath[uuid.UUID],
        data: JSONBody[AssignTask],
        tasks: NamedDependency[TaskService],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[TaskDetail]:
        """Admins assign any task; a worker hands over a task it has claimed."""
        return _with_etag(await tasks.assign(task_id, data.user, expected_version=_if_match(if_match)))

    @post("/{task_id:uuid}/complete", status_code=HTTP_200_OK, summary="Complete a task")
    async def complete(
        self,
        task_id: FromPath[uuid.UUID],
        data: JSONBody[CompleteTask],
        tasks: NamedDependency[TaskService],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[TaskDetail]:
        """422 lists every form error; 409 when completed already or claimed by someone else."""
        return _with_etag(
            await tasks.complete(
                task_id, data.data, comment=data.comment, expected_version=_if_match(if_match)
            )
        )
