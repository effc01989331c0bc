"""The registry app: routes plus the platform (auth, tenancy, database, NATS, outbox, telemetry)."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import NamedDependency, Provide

from definition_registry.controllers import DefinitionController
from definition_registry.services import DefinitionService
from definition_registry.settings import Settings
from wf_platform.auth import Caller
from wf_platform.db import TenantDatabase
from wf_platform.plugin import PlatformConfig, PlatformPlugin
from wf_platform.streams import WF_EVENTS

__all__ = ["TENANT_MIGRATIONS", "create_app", "platform_config"]

TENANT_MIGRATIONS = "definition_registry:migrations"


def platform_config(settings: Settings, /) -> PlatformConfig:
    """How the registry uses the platform (also used by ``python -m definition_registry migrate``)."""
    return PlatformConfig(
        settings=settings,
        tenant_migrations=TENANT_MIGRATIONS,
        streams=(WF_EVENTS,),
        api_title="definition-registry",
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; settings come from ``DEFINITION_REGISTRY_*`` when not given."""
    settings = settings or Settings.from_environ()

    def provide_definitions(
        tenant_db: NamedDependency[TenantDatabase], caller: NamedDependency[Caller]
    ) -> DefinitionService:
        return DefinitionService(
            tenant_db, caller, max_depth=settings.max_json_depth, max_bytes=settings.max_definition_bytes
        )

    return Litestar(
        route_handlers=[DefinitionController],
        dependencies={"definitions": Provide(provide_definitions, sync_to_thread=False)},
        plugins=[PlatformPlugin(platform_config(settings))],
    )
