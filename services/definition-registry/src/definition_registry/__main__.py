"""``python -m definition_registry`` serves; ``... migrate [--tenant ID ...]`` migrates, then exits."""

from __future__ import annotations

import sys

from definition_registry.app import create_app, platform_config
from definition_registry.settings import Settings
from wf_platform.cli import service_main


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    return service_main(
        argv,
        program="python -m definition_registry",
        load_settings=Settings.from_environ,
        create_app=create_app,
        platform_config=platform_config,
    )


if __name__ == "__main__":
    sys.exit(main())
