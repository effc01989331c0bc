"""The inbox app: the ``/v1/tasks`` API, the web inbox at ``/``, the task consumer, and the platform
(auth, tenancy, database, NATS, outbox, telemetry)."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router  # pyright: ignore[reportUnknownVariableType]
from litestar.template.config import TemplateConfig

from task_inbox.controllers import TaskController
from task_inbox.inbox import InboxPlugin
from task_inbox.settings import Settings
from task_inbox.web import WebController
from wf_platform.plugin import PlatformConfig, PlatformPlugin
from wf_platform.streams import WF_TASKS

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "TENANT_MIGRATIONS", "create_app", "platform_config"]

TENANT_MIGRATIONS = "task_inbox:migrations"
PACKAGE_DIR = Path(__file__).parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


def platform_config(settings: Settings, /) -> PlatformConfig:
    """How the inbox uses the platform (also used by ``python -m task_inbox migrate``)."""
    return PlatformConfig(
        settings=settings,
        tenant_migrations=TENANT_MIGRATIONS,
        # The inbox consumes from WF_TASKS and publishes completions to it; it publishes no events.
        streams=(WF_TASKS,),
        api_title="task-inbox",
    )


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.strftime(fmt) + " UTC" if value is not None else ""


def _templates() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; settings come from ``TASK_INBOX_*`` when not given."""
    settings = settings or Settings.from_environ()
    platform_plugin = PlatformPlugin(platform_config(settings))
    csrf = CSRFConfig(
        secret=settings.csrf_secret or secrets.token_hex(32),
        cookie_name="wf_inbox_csrf",
        cookie_httponly=True,
        cookie_samesite="strict",
        cookie_secure=settings.cookie_secure,
        # The API is bearer-only (no ambient credentials, nothing to forge); the rest has no posts.
        exclude=["^/v1/", "^/health", "^/metrics", "^/schema", "^/static/"],
    )
    return Litestar(
        route_handlers=[
            TaskController,
            WebController,
            create_static_files_router(
                path="/static",
                directories=[STATIC_DIR],
                include_in_schema=False,
                cache_control=CacheControlHeader(max_age=3600, public=True),
            ),
        ],
        plugins=[platform_plugin, InboxPlugin(platform_plugin, settings)],
        template_config=_templates(),
        csrf_config=csrf,
    )
