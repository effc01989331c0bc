"""The orchestrator app: the instance API plus the platform, the consumers and the timer loop."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.plugins import InitPlugin
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.consumers import (
    RESULTS,
    TASK_COMPLETIONS,
    ResultHandler,
    TaskCompletionHandler,
    TimerLoop,
)
from orchestrator.controllers import InstanceController
from orchestrator.definitions import DefinitionCache, RegistryClient
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.repositories import TimerRepository
from orchestrator.runtime import Runtime
from orchestrator.services import InstanceService
from orchestrator.settings import Settings
from orchestrator.streams import ORCHESTRATOR_STREAMS
from orchestrator.tables import SHARED_SCHEMA
from wf_platform.auth import Caller
from wf_platform.consumers import PullConsumer
from wf_platform.db import TenantDatabase, transaction_lock
from wf_platform.migrations import migration_lock, upgrade
from wf_platform.plugin import Platform, PlatformConfig, PlatformPlugin
from wf_platform.tenancy import TenantId

__all__ = ["SHARED_MIGRATIONS", "TENANT_MIGRATIONS", "Orchestrator", "create_app", "platform_config"]

TENANT_MIGRATIONS = "orchestrator:migrations"
SHARED_MIGRATIONS = "orchestrator:shared_migrations"


def platform_config(settings: Settings, /) -> PlatformConfig:
    """How the orchestrator uses the platform (also used by ``python -m orchestrator migrate``)."""
    return PlatformConfig(
        settings=settings,
        tenant_migrations=TENANT_MIGRATIONS,
        streams=ORCHESTRATOR_STREAMS,
        run_outbox_relay=settings.outbox_relay,
        api_title="orchestrator",
    )


class Orchestrator:
    """The running parts beyond HTTP: runtime, registry client, consumers, timer loop."""

    def __init__(self, platform: Platform, settings: Settings) -> None:
        self.platform = platform
        self.settings = settings
        self.metrics = OrchestratorMetrics(platform.metrics.registry)
        self.cache = DefinitionCache(default_timeout=settings.default_job_timeout_seconds)
        self.runtime = Runtime(self.cache, self.metrics)
        self.registry = RegistryClient(
            settings.registry_url,
            timeout=settings.registry_timeout_seconds,
            cache_seconds=settings.registry_cache_seconds,
        )
        self.consumers: list[PullConsumer] = []
        self.timers: TimerLoop | None = None

    def tenant_db(self, tenant: TenantId, /) -> TenantDatabase:
        """Units of work in a tenant's schema."""
        return self.platform.tenant_db(tenant)

    async def start(self) -> None:
        """Migrate the shared schema, then start the consumers and the timer loop (after the platform)."""
        await migrate_shared_schema(self.platform.engine)
        self.timers = TimerLoop(
            TimerRepository(self.platform.engine),
            self.runtime,
            self.tenant_db,
            self.metrics,
            poll_seconds=self.settings.timer_poll_seconds,
        )
        if not self.settings.run_background:
            return
        nc = self.platform.nats
        if nc is not None and self.platform.js is not None:
            concurrency = max(1, min(self.settings.consumer_concurrency, self.settings.db_pool_size - 2))
            results = ResultHandler(
                self.runtime,
                self.tenant_db,
                self.platform.tenants.exists,
                self.metrics,
                concurrency=concurrency,
                max_context_bytes=self.settings.max_context_bytes,
            )
            completions = TaskCompletionHandler(
                self.runtime, self.tenant_db, self.platform.tenants.exists, self.metrics
            )
            handlers = {
                RESULTS: (results, results.handle_batch),
                TASK_COMPLETIONS: (completions, None),
            }
            for (stream, durable, subject), (handler, batch_handler) in handlers.items():
                consumer = PullConsumer(
                    nc,
                    stream=stream,
                    durable=durable,
                    filter_subjects=[subject],
                    handle=handler,
                    handle_batch=batch_handler,
                    batch=self.settings.consumer_batch,
                    ack_wait=self.settings.consumer_ack_wait_seconds,
                    concurrency=concurrency,
                    pipeline=self.settings.consumer_pipeline,
                )
                consumer.start()
                self.consumers.append(consumer)
        self.timers.start()

    async def stop(self) -> None:
        """Stop fetching and firing, then close the registry client."""
        for consumer in self.consumers:
            await consumer.stop()
        if self.timers is not None:
            await self.timers.stop()
        await self.registry.aclose()


class OrchestratorPlugin(InitPlugin):
    """Adds the orchestrator's lifespan (inside the platform's) and its dependencies."""

    def __init__(self, platform_plugin: PlatformPlugin, settings: Settings) -> None:
        self.orchestrator = Orchestrator(platform_plugin.platform, settings)
        self.settings = settings

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        orchestrator = self.orchestrator
        settings = self.settings

        def provide_instances(
            tenant_db: NamedDependency[TenantDatabase], caller: NamedDependency[Caller]
        ) -> InstanceService:
            return InstanceService(
                tenant_db,
                caller,
                orchestrator.runtime,
                orchestrator.registry,
                orchestrator.cache,
                max_input_bytes=settings.max_input_bytes,
                max_context_bytes=settings.max_context_bytes,
            )

        app_config.dependencies = {
            **app_config.dependencies,
            "instances": Provide(provide_instances, sync_to_thread=False),
        }
        app_config.state["orchestrator"] = orchestrator

        @asynccontextmanager
        async def lifespan(_: Litestar) -> AsyncGenerator[None]:
            await orchestrator.start()
            try:
                yield
            finally:
                await orchestrator.stop()

        app_config.lifespan = [*app_config.lifespan, lifespan]  # pyright: ignore[reportUnknownMemberType]
        return app_config


async def migrate_shared_schema(engine: AsyncEngine, /) -> None:
    """Bring the orchestrator's shared schema (timers) to head, under an advisory lock."""
    async with migration_lock(), engine.begin() as conn:
        await transaction_lock(conn, "wf.orch")
        await conn.run_sync(
            lambda sync: upgrade(sync, script_location=SHARED_MIGRATIONS, schema=SHARED_SCHEMA)
        )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; settings come from ``ORCHESTRATOR_*`` when not given."""
    settings = settings or Settings.from_environ()
    platform_plugin = PlatformPlugin(platform_config(settings))
    return Litestar(
        route_handlers=[InstanceController],
        plugins=[platform_plugin, OrchestratorPlugin(platform_plugin, settings)],
    )


def get_orchestrator(app: Litestar, /) -> Orchestrator:
    """The :class:`Orchestrator` of an app built by :func:`create_app`."""
    found = app.state.get("orchestrator")
    if not isinstance(found, Orchestrator):
        raise LookupError("not an orchestrator app")
    return found
