"""``python -m orchestrator`` serves; ``python -m orchestrator migrate [--tenant ID ...]`` migrates
the tenant schemas and the shared timer schema, then exits."""

from __future__ import annotations

import sys

from orchestrator.app import create_app, migrate_shared_schema, platform_config
from orchestrator.settings import Settings
from wf_platform.cli import service_main
from wf_platform.db import create_engine


async def _migrate_shared(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await migrate_shared_schema(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    return service_main(
        argv,
        program="python -m orchestrator",
        load_settings=Settings.from_environ,
        create_app=create_app,
        platform_config=platform_config,
        extra_migration=_migrate_shared,
    )


if __name__ == "__main__":
    sys.exit(main())
