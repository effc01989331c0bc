"""RFC 9457 problem details: the one error mapping every service uses.

Every error response is ``application/problem+json``::

    {"type": "urn:wf:problem:<code>", "title": "...", "status": 422, "detail": "...",
     "code": "<code>", "errors": [{"path": "...", "message": "..."}]}

``code`` is the stable, machine-readable part (clients switch on it); ``errors`` appears on validation
problems and lists every problem found. A 500 never leaks the exception text.

Error tree (``ProblemError`` is raised by services and plumbing alike; status and code are attributes):

    ProblemError
    ├── BadRequestError            400 bad_request
    ├── UnauthorizedError          401 unauthorized (always the same generic body)
    ├── ForbiddenError             403 forbidden
    ├── NotFoundError              404 not_found
    ├── ConflictError              409 conflict
    ├── PayloadTooLargeError       413 payload_too_large
    ├── UnsupportedMediaTypeError  415 unsupported_media_type
    ├── UnprocessableError         422 validation_failed (with errors)
    └── ServiceUnavailableError    503 unavailable

A dependency that cannot be reached (Postgres down, restarting, paused past the statement timeout,
its pool exhausted) is not an internal error: such exceptions, whatever layer they surface from,
become 503 ``unavailable`` with ``Retry-After``, as does :class:`ServiceUnavailableError`, so that
clients back off and retry instead of treating the request as failed for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import asyncpg  # pyright: ignore[reportMissingTypeStubs]
import msgspec
import sqlalchemy.exc
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "BadRequestError",
    "ConflictError",
    "FieldError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "Problem",
    "ProblemError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "exception_handlers",
    "is_unavailable",
    "problem_body",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 2
"""The ``Retry-After`` of a 503: about what a restarted database or a reconnect takes."""

_EXC: Any = asyncpg.exceptions  # asyncpg ships no type information
_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted
    TimeoutError,  # a connect or statement timeout: the server does not answer
    sqlalchemy.exc.TimeoutError,  # every pooled connection is busy
    _EXC.PostgresConnectionError,  # SQLSTATE class 08
    _EXC.ConnectionDoesNotExistError,  # the connection was closed under us
    _EXC.CannotConnectNowError,  # starting up, in recovery
    _EXC.AdminShutdownError,
    _EXC.CrashShutdownError,
    _EXC.TooManyConnectionsError,
)

logger = logging.getLogger("wf_platform.problems")


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One validation problem: where (a JSON-path-like string, ``""`` for the document) and what."""

    path: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem-details body with the ``code`` and ``errors`` extension members."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """An error that becomes a problem-details response.

    Attributes:
        status: the HTTP status.
        code: the stable error code.
        title: a short, fixed summary for the code.
        detail: what happened here (safe to show a client).
        errors: the field errors, for validation problems.
    """

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        /,
        *,
        code: str | None = None,
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        self.detail = detail
        self.code = code or self.default_code
        self.errors = list(errors) if errors is not None else None
        super().__init__(detail or self.title)


class BadRequestError(ProblemError):
    """The request cannot be understood."""


class UnauthorizedError(ProblemError):
    """No usable credentials; the body never says why (the log does)."""

    status = 401
    default_code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(ProblemError):
    """Authenticated, but not allowed."""

    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFoundError(ProblemError):
    """No such resource for this tenant (another tenant's resource is also 'not found')."""

    status = 404
    default_code = "not_found"
    title = "Not found"


class ConflictError(ProblemError):
    """The request conflicts with the stored state."""

    status = 409
    default_code = "conflict"
    title = "Conflict"


class PayloadTooLargeError(ProblemError):
    """A size limit was exceeded."""

    status = 413
    default_code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaTypeError(ProblemError):
    """The body's media type is not accepted here."""

    status = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class UnprocessableError(ProblemError):
    """The body was understood but is invalid; ``errors`` lists every problem."""

    status = 422
    default_code = "validation_failed"
    title = "Validation failed"


class ServiceUnavailableError(ProblemError):
    """A dependency is down; retry later."""

    status = 503
    default_code = "unavailable"
    title = "Service unavailable"


_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_body(
    status: int,
    /,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
) -> bytes:
    """The encoded problem-details body."""
    default_code, default_title = _STATUS_CODES.get(status, ("error", "Error"))
    code = code or default_code
    problem = Problem(
        type=f"urn:wf:problem:{code}",
        title=title or default_title,
        status=status,
        code=code,
        detail=detail,
        errors=list(errors) if errors is not None else None,
    )
    return msgspec.json.encode(problem)


def problem_response(
    status: int,
    /,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """Build a problem-details response."""
    return Response(
        content=problem_body(status, code=code, title=title, detail=detail, errors=errors),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def is_unavailable(exc: BaseException, /) -> bool:
    """Whether ``exc`` (or an exception it was raised from) means a dependency cannot be reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def _problem_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ProblemError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return problem_response(
        exc.status, code=exc.code, title=exc.title, detail=exc.detail, errors=exc.errors, headers=headers
    )


def _validation_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ValidationException)
    errors: list[FieldError] = []
    extra: Any = exc.extra
    items: list[Any] = list(extra) if isinstance(extra, list) else []  # pyright: ignore[reportUnknownArgumentType]
    for item in items:
        if isinstance(item, dict):
            entry: dict[str, Any] = dict(item)  # pyright: ignore[reportUnknownArgumentType]
            key = entry.get("key") or entry.get("source") or ""
            errors.append(FieldError(path=str(key), message=str(entry.get("message", "invalid"))))
    return problem_response(
        400,
        code="bad_request",
        detail=str(exc.detail),
        errors=errors or [FieldError(path="", message=exc.detail)],
    )


def _http_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        # Never say why a token was refused.
        return problem_response(
            401, detail="missing or invalid credentials", headers={"WWW-Authenticate": "Bearer"}
        )
    if isinstance(exc, PermissionDeniedException):
        return problem_response(403, detail=exc.detail or "forbidden")
    if status >= 500:
        return problem_response(status)
    return problem_response(status, detail=exc.detail)


def _internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if is_unavailable(exc):
        logger.warning(
            "%s %s: a dependency is unavailable: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return problem_response(
            503,
            detail="a dependency is unavailable; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    logger.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return problem_response(HTTP_500_INTERNAL_SERVER_ERROR)


ExceptionHandler = Callable[[Request[Any, Any, Any], Exception], Response[bytes]]


def exception_handlers() -> dict[type[Exception] | int, ExceptionHandler]:
    """The handlers to install on an app: every error becomes problem details."""
    return {
        ProblemError: _problem_error_handler,
        ValidationException: _validation_handler,
        HTTPException: _http_handler,
        Exception: _internal_handler,
    }
