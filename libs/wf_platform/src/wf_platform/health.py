"""``GET /health/live`` (the process answers) and ``GET /health/ready`` (its Postgres and NATS answer).

Readiness is 200 ``{"status": "ok", "checks": {"postgres": "ok", "nats": "ok"}}`` or 503 with the failing
check's reason; neither route needs a token, and neither is traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import MediaType, Response, get

__all__ = ["HealthCheck", "health_routes", "run_checks"]

HealthCheck = Callable[[], Awaitable[None]]
"""Raises when its dependency is not usable."""


async def run_checks(
    checks: Mapping[str, HealthCheck], /, *, limit_seconds: float = 2.0
) -> tuple[bool, dict[str, str]]:
    """Run the checks concurrently with a timeout each; return (all ok, name -> "ok" or the reason)."""

    async def one(check: HealthCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout=limit_seconds)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(r == "ok" for r in results), report


def health_routes(checks: Callable[[], Mapping[str, HealthCheck]], /) -> list[Any]:
    """The two health handlers; ``checks`` is read per request (dependencies exist only after start-up)."""

    @get(
        "/health/live",
        include_in_schema=True,
        tags=["health"],
        sync_to_thread=False,
        opt={"exclude_from_auth": True},
    )
    def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/health/ready", include_in_schema=True, tags=["health"], opt={"exclude_from_auth": True})
    async def ready() -> Response[dict[str, Any]]:
        """Postgres and NATS are reachable."""
        ok, report = await run_checks(checks())
        return Response(
            content={"status": "ok" if ok else "unavailable", "checks": report},
            status_code=200 if ok else 503,
            media_type=MediaType.JSON,
        )

    return [live, ready]
