"""The web inbox at ``/``: server-rendered pages over the same :class:`~task_inbox.services.TaskService`.

Sign-in:

- production: the deployment's OIDC proxy sets ``Authorization: Bearer <JWT>`` on every request; the
  token is verified exactly as the API verifies it;
- development (``TASK_INBOX_DEV_LOGIN=true``): ``/login`` picks a tenant, user, groups and roles and
  mints a token with the dev private key; the token lives in an HttpOnly, ``SameSite=Strict`` cookie.

Either way the page's caller is the verified token's. The ``/v1`` API never reads the cookie (bearer
only). Every form post carries a CSRF token (Litestar's CSRF middleware, double-submit cookie with an
HMAC), on top of the strict cookie. Pages use no JavaScript except Mermaid for the instance graph,
served from ``/static`` with the page (no CDN).
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from task_inbox.controllers import parse_sort, parse_statuses
from task_inbox.inbox import SESSION_COOKIE, Inbox, WebSession
from task_inbox.services import (
    ADMIN_ROLE,
    WORK_ROLE,
    InvalidTaskDataError,
    ListQuery,
    TaskDetail,
    TaskService,
)
from task_inbox.webforms import build_fields, errors_by_pointer, parse_form
from wf_platform.devkeys import mint_token
from wf_platform.problems import ProblemError
from wf_platform.tenancy import is_valid_tenant_id

__all__ = ["SESSION_COOKIE", "WebController"]

logger = logging.getLogger("task_inbox.web")


_RESERVED_FIELDS = frozenset({"_csrf_token", "_comment"})
DEV_ROLES = (WORK_ROLE, ADMIN_ROLE, "instances:read")


def _safe_next(raw: str | None) -> str:
    """Only local paths: never an open redirect."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


def _form_dict(form: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            result[str(key)] = value
    return result


def _day(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.combine(date.fromisoformat(raw), time.min, tzinfo=UTC)
    except ValueError:
        return None


def _priority(raw: str | None) -> int | None:
    """A priority filter from the page's form: 0 to 100 (what tasks carry), else no filter."""
    try:
        value = int(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value <= 100 else None


@dataclass(frozen=True, slots=True)
class _Page:
    session: WebSession | None
    redirect: Redirect | None = None
    forbidden: Template | None = None


class WebController(Controller):
    """The pages and form posts of the web inbox."""

    path = "/"
    include_in_schema = False

    # -- sessions ----------------------------------------------------------------------------------

    @staticmethod
    async def _session(request: Request[Any, Any, Any], inbox: NamedDependency[Inbox]) -> _Page:
        session = await inbox.web_session(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            quoted = urllib.parse.quote(target, safe="")
            return _Page(None, redirect=Redirect(f"/login?next={quoted}", status_code=303))
        caller = session.caller
        if not (caller.has_role(WORK_ROLE) or caller.has_role(ADMIN_ROLE)):
            return _Page(
                session,
                forbidden=Template(
                    template_name="error.html",
                    context={
                        "session": session,
                        "title": "Not allowed",
                        "message": "Your account has neither the tasks:work nor the tasks:admin role.",
                    },
                    status_code=403,
                ),
            )
        try:
            await inbox.platform.ensure_active(caller.tenant)
        except ProblemError as exc:
            return _Page(
                session,
                forbidden=Template(
                    template_name="error.html",
                    context={"session": session, "title": "Not allowed", "message": exc.detail or exc.title},
                    status_code=exc.status,
                ),
            )
        return _Page(session)

    @get("/login", name="login")
    async def login_page(self, request: Request[Any, Any, Any], inbox: NamedDependency[Inbox]) -> Template:
        """The dev sign-in form, or a pointer to the organisation's sign-in."""
        session = await inbox.web_session(request)
        return Template(
            template_name="login.html",
            context={
                "session": session,
                "dev_login": inbox.settings.dev_login,
                "next": _safe_next(request.query_params.get("next")),
                "roles": DEV_ROLES,
                "error": None,
                "form": {
                    "tenant": "acme",
                    "user": "user-1",
                    "groups": "",
                    "roles": [WORK_ROLE, "instances:read"],
                },
            },
        )

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any], inbox: NamedDependency[Inbox]) -> Response[Any]:
        """Mint a dev token and keep it in an HttpOnly, SameSite=Strict cookie (dev only)."""
        if not inbox.settings.dev_login:
            return Template(
                template_name="error.html",
                context={"session": None, "title": "Not found", "message": "There is no sign-in form here."},
                status_code=404,
            )
        form = await request.form()
        tenant = str(form.get("tenant", "")).strip()
        user = str(form.get("user", "")).strip()
        groups = [g.strip() for g in str(form.get("groups", "")).split(",") if g.strip()]
        roles = [r for r in form.getall("roles", []) if r in DEV_ROLES]
        next_url = _safe_next(str(form.get("next", "/")))
        error = None
        if not is_valid_tenant_id(tenant):
            error = "The tenant must be 3 to 32 characters: lower-case letters, digits, _ (a letter first)."
        elif not user or len(user) > 255:
            error = "Give a user name."
        key = inbox.dev_private_key()
        if error is None and key is None:
            error = "The dev sign-in has no private key (TASK_INBOX_DEV_PRIVATE_KEY_FILE)."
        if error is not None or key is None:
            return Template(
                template_name="login.html",
                context={
                    "session": None,
                    "dev_login": True,
                    "next": next_url,
                    "roles": DEV_ROLES,
                    "error": error,
                    "form": {"tenant": tenant, "user": user, "groups": ", ".join(groups), "roles": roles},
                },
                status_code=400,
            )
        settings = inbox.settings
        token = mint_token(
            key,
            tenant=tenant,
            sub=user,
            roles=roles,
            groups=groups,
            ttl_seconds=settings.dev_token_ttl_seconds,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        return Redirect(
            next_url,
            status_code=303,
            cookies=[
                Cookie(
                    key=SESSION_COOKIE,
                    value=token,
                    path="/",
                    httponly=True,
                    samesite="strict",
                    secure=settings.cookie_secure,
                    max_age=settings.dev_token_ttl_seconds,
                )
            ],
        )

    @post("/logout", status_code=303)
    async def logout(self) -> Redirect:
        """Forget the dev session cookie (a proxy's header session ends at the proxy)."""
        return Redirect(
            "/login",
            status_code=303,
            cookies=[
                Cookie(key=SESSION_COOKIE, value="", path="/", max_age=0, httponly=True, samesite="strict")
            ],
        )

    # -- the list -----------------------------------------------------------------------------------

    @get("/", name="inbox")
    async def task_list(
        self, request: Request[Any, Any, Any], inbox: NamedDependency[Inbox]
    ) -> Response[Any]:
        """The task list with its filters."""
        page = await self._session(request, inbox)
        if page.redirect is not None:
            return page.redirect
        if page.forbidden is not None:
            return page.forbidden
        assert page.session is not None
        params = request.query_params
        raw: dict[str, str] = {k: str(params.get(k, "")) for k in _FILTERS}
        if "status" not in params:
            raw["status"] = "open"
        if "sort" not in params:
            raw["sort"] = "due"
        service = inbox.task_service(page.session.caller)
        error: str | None = None
        result = None
        try:
            key, descending = parse_sort(raw["sort"])
            query = ListQuery(
                statuses=parse_statuses(raw["status"] if raw["status"] != "any" else ""),
                assignee="me" if raw["mine"] else None,
                candidate_group=raw["group"] or None,
                definition=raw["definition"] or None,
                instance_id=raw["instance"] or None,
                due_before=_day(raw["due_before"]),
                due_after=_day(raw["due_after"]),
                priority_min=_priority(raw["priority_min"]),
                q=raw["q"][:200] or None,
                sort=key,
                descending=descending,
                cursor=str(params.get("cursor", "")) or None,
                limit=25,
            )
            result = await service.list(query)
        except ProblemError as exc:
            error = exc.detail or exc.title
        next_link = None
        if result is not None and result.next_cursor:
            next_link = "/?" + urllib.parse.urlencode(
                {**{k: v for k, v in raw.items() if v}, "cursor": result.next_cursor}
            )
        done = params.get("done")
        return Template(
            template_name="list.html",
            context={
                "session": page.session,
                "filters": raw,
                "page": result,
                "error": error,
                "next_link": next_link,
                "paged": bool(params.get("cursor")),
                "done": done,
                "now": datetime.now(UTC),
            },
            status_code=400 if error else 200,
        )

    # -- one task -----------------------------------------------------------------------------------

    async def _render_task(
        self,
        inbox: Inbox,
        session: WebSession,
        task: TaskDetail,
        *,
        status_code: int = 200,
        errors: list[Any] | None = None,
        submitted: Mapping[str, str] | None = None,
        message: str | None = None,
        comment: str = "",
    ) -> Template:
        fields = build_fields(task.form_schema, hints=task.ui_hints, values=task.data or {})
        by_pointer, general = errors_by_pointer(errors or [], fields)
        fields = build_fields(
            task.form_schema,
            hints=task.ui_hints,
            values=task.data or {},
            errors=by_pointer,
            submitted=submitted,
        )
        graph = await inbox.instance_graph(task.instance_id, token=session.token)
        caller = session.caller
        can_complete = task.status == "open" or (task.status == "claimed" and task.assignee == caller.sub)
        return Template(
            template_name="task.html",
            context={
                "session": session,
                "task": task,
                "fields": fields,
                "general_errors": general,
                "error_count": len(errors or []),
                "message": message,
                "failed": status_code >= 400,
                "graph": graph,
                "can_claim": task.status == "open",
                "can_unclaim": task.status == "claimed"
                and (task.assignee == caller.sub or caller.has_role(ADMIN_ROLE)),
                "can_complete": can_complete,
                "comment": comment,
                "now": datetime.now(UTC),
            },
            status_code=status_code,
        )

    async def _task_or_error(
        self, service: TaskService, session: WebSession, task_id: uuid.UUID
    ) -> TaskDetail | Template:
        try:
            return await service.get(task_id)
        except ProblemError as exc:
            return Template(
                template_name="error.html",
                context={"session": session, "title": exc.title, "message": exc.detail or exc.title},
                status_code=exc.status,
            )

    @get("/tasks/{task_id:uuid}", name="task")
    async def task_page(
        self, task_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], inbox: NamedDependency[Inbox]
    ) -> Response[Any]:
        """A task: details, form, graph."""
        page = await self._session(request, inbox)
        if page.redirect is not None:
            return page.redirect
        if page.forbidden is not None:
            return page.forbidden
        assert page.session is not None
        task = await self._task_or_error(inbox.task_service(page.session.caller), page.session, task_id)
        if isinstance(task, Template):
            return task
        return await self._render_task(inbox, page.session, task)

    @post("/tasks/{task_id:uuid}/{action:str}", status_code=303)
    async def task_action(
        self,
        task_id: FromPath[uuid.UUID],
        action: FromPath[str],
        request: Request[Any, Any, Any],
        inbox: NamedDependency[Inbox],
    ) -> Response[Any]:
        """claim / unclaim / complete from the task page (post, redirect, get)."""
        page = await self._session(request, inbox)
        if page.redirect is not None:
            return page.redirect
        if page.forbidden is not None:
            return page.forbidden
        session = page.session
        assert session is not None
        service = inbox.task_service(session.caller)
        if action not in _ACTIONS:
            return Template(
                template_name="error.html",
                context={"session": session, "title": "Not found", "message": "No such action."},
                status_code=404,
            )
        submitted: dict[str, str] = {}
        comment = ""
        try:
            if action == "claim":
                await service.claim(task_id)
                return Redirect(f"/tasks/{task_id}", status_code=303)
            if action == "unclaim":
                await service.unclaim(task_id)
                return Redirect(f"/tasks/{task_id}", status_code=303)
            task = await service.get(task_id)
            submitted = {
                k: v for k, v in _form_dict(await request.form()).items() if k not in _RESERVED_FIELDS
            }
            comment = str((await request.form()).get("_comment", "")).strip()
            data = parse_form(task.form_schema, submitted)
            completed = await service.complete(task_id, data, comment=comment or None)
            return Redirect("/?" + urllib.parse.urlencode({"done": completed.title}), status_code=303)
        except InvalidTaskDataError as exc:
            task = await service.get(task_id)
            return await self._render_task(
                inbox,
                session,
                task,
                status_code=422,
                errors=list(exc.errors or []),
                submitted=submitted,
                message=f"The form has {len(exc.errors or [])} error(s); see the fields marked below.",
                comment=comment,
            )
        except ProblemError as exc:
            task_or_error = await self._task_or_error(service, session, task_id)
            if isinstance(task_or_error, Template):
                return task_or_error
            return await self._render_task(
                inbox, session, task_or_error, status_code=exc.status, message=exc.detail or exc.title
            )


_FILTERS = (
    "status",
    "mine",
    "group",
    "definition",
    "instance",
    "due_before",
    "due_after",
    "priority_min",
    "q",
    "sort",
)
_ACTIONS: frozenset[Literal["claim", "unclaim", "complete"]] = frozenset({"claim", "unclaim", "complete"})
