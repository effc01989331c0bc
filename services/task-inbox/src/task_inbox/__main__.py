"""``python -m task_inbox`` serves; ``... migrate [--tenant ID ...]`` migrates, then exits."""

from __future__ import annotations

import sys

from task_inbox.app import create_app, platform_config
from task_inbox.settings import Settings
from wf_platform.cli import service_main


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    return service_main(
        argv,
        program="python -m task_inbox",
        load_settings=Settings.from_environ,
        create_app=create_app,
        platform_config=platform_config,
    )


if __name__ == "__main__":
    sys.exit(main())
