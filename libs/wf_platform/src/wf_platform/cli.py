"""The command line every service shares: ``python -m <service> [serve]`` and ``... migrate``.

``migrate`` creates the database if missing, migrates the shared schema and every known tenant
(plus those named with ``--tenant``), runs the service's own extra migration if it has one, and
exits; the Helm migration Job runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from wf_platform.logs import configure_logging
from wf_platform.plugin import PlatformConfig, migrate
from wf_platform.settings import ServiceSettings

__all__ = ["freeze_startup_heap", "service_main"]

S = TypeVar("S", bound=ServiceSettings)

logger = logging.getLogger("wf_platform.cli")


def freeze_startup_heap(_: object = None, /) -> int:
    """Move every object startup built out of the garbage collector's reach (``gc.freeze``); the
    number moved.

    A served process holds ~160,000 such objects (modules, the app and its schemas, the pools), and
    a full collection traversed all of them: 70-160 ms with the event loop stopped, every few
    seconds under load, which set the latency p99 (measured in the orchestrator at 150 W1
    instances/s). Frozen, they are still freed by reference counting; only cycles among them would
    stay, and startup's garbage is collected first. Served processes only (``service_main``): a test
    process builds many apps and would keep each one's cycles.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("startup heap frozen: %d objects out of the collector's reach", frozen)
    return frozen


def service_main(
    argv: list[str] | None,
    /,
    *,
    program: str,
    load_settings: Callable[[], S],
    create_app: Callable[[S], Any],
    platform_config: Callable[[S], PlatformConfig],
    extra_migration: Callable[[S], Awaitable[None]] | None = None,
) -> int:
    """Parse ``argv`` and serve or migrate; the process exit code."""
    import uvicorn

    parser = argparse.ArgumentParser(prog=program)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (the default)")
    migrate_cmd = sub.add_parser("migrate", help="create/migrate the database and tenant schemas, then exit")
    migrate_cmd.add_argument("--tenant", action="append", default=[], help="also provision this tenant")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    if args.command == "migrate":

        async def run_migrations() -> int:
            tenants = await migrate(platform_config(settings), tenants=tuple(args.tenant))
            if extra_migration is not None:
                await extra_migration(settings)
            return len(tenants)

        count = asyncio.run(run_migrations())
        print(f"migrated {count} tenant(s)")  # noqa: T201 - a command's result
        return 0
    app = create_app(settings)
    app.on_startup.append(freeze_startup_heap)  # after every lifespan: the app is fully started
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=True,
        server_header=False,
    )
    return 0
