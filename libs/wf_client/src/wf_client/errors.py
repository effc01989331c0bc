"""Errors of the client SDK, built from the services' RFC 9457 problem details.

Tree::

    WorkflowClientError            any failed call (status, type, title, detail, code, errors)
    ├── BadRequest                 400 (and 415)
    ├── Unauthorized               401: no token, or the token was refused
    ├── Forbidden                  403: the token lacks a role
    ├── NotFound                   404: unknown, or another tenant's
    ├── Conflict                   409: same version other content, task completed or claimed
    ├── PayloadTooLarge            413
    ├── ValidationFailed           422: ``.errors`` lists every problem as ``{path, message}``
    └── Unavailable                502/503/504, or the service could not be reached
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "BadRequest",
    "Conflict",
    "FieldError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WorkflowClientError",
    "error_from_response",
]

FieldError = dict[str, str]
"""One validation problem: ``{"path": ..., "message": ...}``."""


class WorkflowClientError(Exception):
    """A call to a service failed.

    Attributes:
        status: The HTTP status (``None`` when no response came).
        type: The problem type URI.
        title: The problem's short summary.
        detail: What went wrong in this case.
        code: The machine-readable code (``definition_invalid``, ``not_found``, ...).
        errors: Every field error ``{path, message}`` (422).
        method: The request method.
        url: The request URL.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        type: str = "about:blank",
        title: str = "",
        code: str | None = None,
        errors: list[FieldError] | None = None,
        method: str = "",
        url: str = "",
        body: Any = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.code = code
        self.errors: list[FieldError] = list(errors or [])
        self.method = method
        self.url = url
        self.body = body
        super().__init__(detail)

    def __str__(self) -> str:
        where = f" ({self.method} {self.url} -> {self.status})" if self.method and self.status else ""
        lines = [f"{self.detail}{where}"]
        lines += [f"  {e.get('path') or '(root)'}: {e.get('message', '')}" for e in self.errors]
        return "\n".join(lines)


class BadRequest(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """400."""


class Unauthorized(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """401: no token, or the token was refused."""


class Forbidden(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """403: the token lacks a role."""


class NotFound(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """404: unknown, or another tenant's resource."""


class Conflict(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """409: the resource is in another state (or holds other content)."""


class PayloadTooLarge(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """413."""


class ValidationFailed(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """422: ``errors`` lists every problem with its path."""


class Unavailable(WorkflowClientError):  # noqa: N818 - HTTP status names read best
    """The service is down, overloaded or unreachable (502, 503, 504, or no connection)."""


_BY_STATUS: dict[int, type[WorkflowClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: BadRequest,
    422: ValidationFailed,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def _field_errors(raw: object) -> list[FieldError]:
    if not isinstance(raw, list):
        return []
    errors: list[FieldError] = []
    for item in raw:  # pyright: ignore[reportUnknownVariableType]
        if isinstance(item, dict):
            entry: dict[str, Any] = item  # pyright: ignore[reportUnknownVariableType]
            errors.append({"path": str(entry.get("path", "")), "message": str(entry.get("message", ""))})
        else:
            errors.append({"path": "", "message": str(item)})  # pyright: ignore[reportUnknownArgumentType]
    return errors


def error_from_response(response: httpx.Response, /) -> WorkflowClientError:
    """The typed error of a failed response (problem details when the body is one)."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    problem: dict[str, Any] = body if isinstance(body, dict) else {}  # pyright: ignore[reportUnknownVariableType]
    status = response.status_code
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else WorkflowClientError)
    title = str(problem.get("title") or response.reason_phrase or "")
    detail = str(
        problem.get("detail") or title or (body if isinstance(body, str) and body else f"HTTP {status}")
    )
    return cls(
        detail,
        status=status,
        type=str(problem.get("type") or "about:blank"),
        title=title,
        code=str(problem["code"]) if problem.get("code") is not None else None,
        errors=_field_errors(problem.get("errors")),
        method=response.request.method,
        url=str(response.request.url),
        body=body,
    )
