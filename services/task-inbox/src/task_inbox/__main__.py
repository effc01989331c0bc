"""``python -m task_inbox`` serves; ``python -m task_inbox migrate [--tenant ID ...]``
creates the database if missing, migrates the shared schema and every known tenant (plus the named
ones), then exits."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from task_inbox.app import create_app, platform_config
from task_inbox.settings import Settings
from wf_platform.logs import configure_logging
from wf_platform.plugin import migrate


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m task_inbox")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (the default)")
    migrate_cmd = sub.add_parser("migrate", help="create/migrate the database and tenant schemas, then exit")
    migrate_cmd.add_argument("--tenant", action="append", default=[], help="also provision this tenant")
    args = parser.parse_args(argv)
    settings = Settings.from_environ()
    configure_logging(service=settings.service_name, level=settings.log_level)
    if args.command == "migrate":
        tenants = asyncio.run(migrate(platform_config(settings), tenants=tuple(args.tenant)))
        print(f"migrated {len(tenants)} tenant(s)")  # noqa: T201 - a command's result
        return 0
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
